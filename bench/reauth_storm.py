# 300 concurrent change-password requests (wrong current password) from one
# signed-in account, and another account's sign-in latency meanwhile.
#
#   python3 bench/reauth_storm.py PORT
#
# Against a pancake serving on 127.0.0.1:PORT that has the verified accounts
# a@example.com and b@example.com, both with the password below (BENCHMARKS.md
# has the commands). Prints one JSON line.
import http.client, json, threading, time, sys, statistics
HOST, PORT = "127.0.0.1", int(sys.argv[1])
PW = "a long enough passphrase"

def req(method, path, body=None, cookie=None, csrf=None):
    c = http.client.HTTPConnection(HOST, PORT, timeout=120)
    h = {"origin": f"http://{HOST}:{PORT}"}
    if body is not None:
        h["content-type"] = "application/json"
    if cookie: h["cookie"] = cookie
    if csrf: h["x-csrf-token"] = csrf
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); data = r.read()
    setc = r.getheader("set-cookie")
    c.close()
    return r.status, data, setc

def session_of(email):
    s, d, setc = req("GET", "/api/auth/csrf")
    cookie = setc.split(";")[0]; csrf = json.loads(d)["csrf_token"]
    s, d, setc = req("POST", "/api/auth/login", {"email": email, "password": PW}, cookie, csrf)
    assert s == 200, (s, d)
    return setc.split(";")[0], json.loads(d)["csrf_token"]

def login_ms(email):
    t = time.perf_counter(); session_of(email); return (time.perf_counter() - t) * 1000

quiet = [login_ms("b@example.com") for _ in range(5)]
cookie, csrf = session_of("a@example.com")
statuses = []
def hog():
    s, _, _ = req("POST", "/api/auth/change-password", {"password": "wrong wrong wrong", "new_password": "another long passphrase"}, cookie, csrf)
    statuses.append(s)
threads = [threading.Thread(target=hog) for _ in range(300)]
t0 = time.perf_counter()
for t in threads: t.start()
during = [login_ms("b@example.com") for _ in range(5)]
for t in threads: t.join()
storm_s = time.perf_counter() - t0
counts = {s: statuses.count(s) for s in set(statuses)}
print(json.dumps({"quiet_login_ms": [round(x, 1) for x in quiet], "login_ms_during_storm": [round(x, 1) for x in during],
                  "storm_statuses": counts, "storm_seconds": round(storm_s, 2)}))
