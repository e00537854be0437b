// The peers' side of bench/jobs.sh: the same workloads as bench/src/bin/jobs.rs,
// run on graphile-worker or pg-boss, printing one JSON line per measurement.
//
//   node queue.mjs graphile|pgboss burndown|enqueue|latency --db URL [--jobs N] [--concurrency C]
//
// The database must be fresh. Settings favour throughput the way each
// project's documentation suggests; they are printed with the results.
import { run, makeWorkerUtils, Logger } from "graphile-worker";
import PgBoss from "pg-boss";

const [impl, workload, ...rest] = process.argv.slice(2);
const opt = { jobs: 0, concurrency: 16 };
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, "")] = rest[i + 1];
opt.jobs = Number(opt.jobs);
opt.concurrency = Number(opt.concurrency);
const emit = (o) => console.log(JSON.stringify({ bench: "jobs", impl, engine: "postgres", workload, ...o }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

let done = 0;
const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});
let stampWaiter = null;

async function graphile() {
  const utils = await makeWorkerUtils({ connectionString: opt.db, logger: quiet });
  await utils.migrate();
  const settings = { concurrency: opt.concurrency, pollInterval: 1000 };
  const start = () =>
    run({
      connectionString: opt.db,
      noHandleSignals: true,
      ...settings,
      // A pool as large as the concurrency, as graphile-worker recommends.
      maxPoolSize: Math.max(10, opt.concurrency + 2),
      // Per-job log lines would cost graphile-worker more than the jobs do.
      logger: quiet,
      taskList: {
        noop: async () => {
          done++;
        },
        stamp: async (p) => {
          const waited = now() - p.t;
          if (stampWaiter) stampWaiter(waited);
        },
      },
    });
  const batchInsert = async (from, to) =>
    utils.withPgClient((c) =>
      c.query(
        `select graphile_worker.add_jobs(array(
           select ('noop', json_build_object('i', g), null, null, null, null, null, null)::graphile_worker.job_spec
           from generate_series($1::int, $2::int) g))`,
        [from, to],
      ),
    );
  await workloads({
    settings,
    insertBatch: batchInsert,
    insertOne: (i) => utils.addJob("noop", { i }),
    stamp: () => utils.addJob("stamp", { t: now() }),
    start: async () => {
      const r = await start();
      return () => r.stop();
    },
  });
  await utils.release();
}

async function pgboss() {
  const boss = new PgBoss({ connectionString: opt.db, max: Math.max(10, opt.concurrency + 2) });
  boss.on("error", (e) => console.error(e));
  await boss.start();
  await boss.createQueue("noop");
  await boss.createQueue("stamp");
  // pg-boss waits its polling interval after every fetch, so its throughput is
  // workers × batchSize / interval: the shortest interval it allows, one
  // worker per unit of concurrency, and batches of 100 handled at once.
  const settings = { pollingIntervalSeconds: 0.5, batchSize: 100, workers: opt.concurrency };
  await workloads({
    settings,
    insertBatch: (from, to) => {
      const jobs = [];
      for (let i = from; i <= to; i++) jobs.push({ name: "noop", data: { i } });
      return boss.insert(jobs);
    },
    insertOne: (i) => boss.send("noop", { i }),
    stamp: () => boss.send("stamp", { t: now() }),
    start: async () => {
      const ids = [];
      for (let w = 0; w < opt.concurrency; w++) {
        ids.push(
          await boss.work("noop", { pollingIntervalSeconds: 0.5, batchSize: 100 }, async (jobs) => {
            done += jobs.length;
          }),
        );
        ids.push(
          await boss.work("stamp", { pollingIntervalSeconds: 0.5, batchSize: 1 }, async ([job]) => {
            const waited = now() - job.data.t;
            if (stampWaiter) stampWaiter(waited);
          }),
        );
      }
      return async () => {
        for (const id of ids) await boss.offWork({ id });
      };
    },
  });
  await boss.stop({ graceful: false, wait: true });
}

async function workloads({ settings, insertBatch, insertOne, stamp, start }) {
  if (workload === "burndown") {
    const n = opt.jobs || 100000;
    let t = now();
    for (let from = 1; from <= n; from += 1000) await insertBatch(from, Math.min(n, from + 999));
    const insertS = (now() - t) / 1000;
    t = now();
    const stop = await start();
    while (done < n) await sleep(2);
    const runS = (now() - t) / 1000;
    await stop();
    emit({ jobs: n, concurrency: opt.concurrency, insert_s: insertS, run_s: runS, jobs_per_s: n / runS, settings });
  } else if (workload === "enqueue") {
    const n = opt.jobs || 100000;
    const single = Math.max(1, Math.floor(n / 20));
    let t = now();
    for (let i = 0; i < single; i++) await insertOne(i);
    let s = (now() - t) / 1000;
    emit({ workload: "enqueue_single", jobs: single, seconds: s, jobs_per_s: single / s });
    t = now();
    for (let from = 1; from <= n; from += 1000) await insertBatch(from, Math.min(n, from + 999));
    s = (now() - t) / 1000;
    emit({ workload: "enqueue_batch", batch: 1000, jobs: n, seconds: s, jobs_per_s: n / s });
  } else if (workload === "latency") {
    const n = opt.jobs || 1000;
    const stop = await start();
    await sleep(1000);
    const waits = [];
    for (let i = 0; i < n; i++) {
      const got = new Promise((resolve) => (stampWaiter = resolve));
      await stamp();
      waits.push(await got);
    }
    await stop();
    waits.sort((a, b) => a - b);
    const pick = (q) => waits[Math.min(waits.length - 1, Math.floor(waits.length * q))];
    emit({ jobs: n, p50_ms: pick(0.5), p99_ms: pick(0.99), max_ms: waits[waits.length - 1], settings });
  } else {
    throw new Error(`unknown workload ${workload}`);
  }
}

if (impl === "graphile") await graphile();
else if (impl === "pgboss") await pgboss();
else throw new Error(`unknown implementation ${impl}`);
process.exit(0);
