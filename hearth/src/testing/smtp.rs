//! A real SMTP server on loopback for tests: it speaks enough of RFC 5321
//! (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, and AUTH PLAIN when it
//! wants a login) for a real client such as lettre to deliver to it, and
//! hands each message to the test.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::mail::{SmtpSecurity, Transport};

/// Largest message the sink takes (bigger ones get 552).
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender.
    pub from: String,
    /// The envelope recipients.
    pub to: Vec<String>,
    /// The user the client logged in as, if it did.
    pub user: Option<String>,
    /// The message as sent: headers and body, dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Received {
    /// The token of the first link to `path` (`/auth/reset`) in the message:
    /// the characters after `path?token=` that can be in a token.
    pub fn token_for(&self, path: &str) -> Option<String> {
        let text = self.decoded();
        let needle = format!("{path}?token=");
        let start = text.find(&needle)? + needle.len();
        let token: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        (!token.is_empty()).then_some(token)
    }

    /// The message with quoted-printable undone (soft line breaks joined,
    /// `=XX` decoded), as a reader would see its text. Applied to the whole
    /// message, so only for finding text, not for exact bytes.
    pub fn decoded(&self) -> String {
        let bytes = self.data.replace("=\r\n", "").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
            {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The value of header `name` (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            if n.eq_ignore_ascii_case(name) {
                let mut value = v.trim().to_owned();
                while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                }
                return Some(value);
            }
        }
        None
    }
}

/// The server; it stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    login: Option<(String, String)>,
    rx: Mutex<mpsc::UnboundedReceiver<Received>>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Starts a server on a random loopback port.
    pub async fn start() -> SmtpSink {
        Self::start_inner(None).await
    }

    /// Starts a server that accepts mail only after `AUTH PLAIN` with this
    /// user and password (and answers 535 to any other).
    pub async fn start_with_login(user: &str, password: &str) -> SmtpSink {
        Self::start_inner(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start_inner(login: Option<(String, String)>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the test SMTP server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test SMTP server address: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let wanted = login.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let wanted = wanted.clone();
                tokio::spawn(async move {
                    if let Err(e) = session(stream, tx, wanted).await {
                        eprintln!("test SMTP session ended: {e}");
                    }
                });
            }
        });
        SmtpSink {
            addr,
            login,
            rx: Mutex::new(rx),
            task,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points `config` at this server: SMTP without TLS on its port, with
    /// the login it wants, if any.
    pub fn configure(&self, config: &mut Config) {
        config.mail.transport = Transport::Smtp;
        config.mail.smtp.host = self.addr.ip().to_string();
        config.mail.smtp.port = Some(self.addr.port());
        config.mail.smtp.security = SmtpSecurity::None;
        if let Some((user, password)) = &self.login {
            config.mail.smtp.username = Some(user.clone());
            config.mail.smtp.password = Some(crate::config::Secret::new(password.clone()));
        }
    }

    /// The next message; panics after 30 seconds without one.
    pub async fn next(&self) -> Received {
        let mut rx = self.rx.lock().await;
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the test SMTP server stopped"),
            Err(_) => panic!("no mail arrived within 30 s"),
        }
    }

    /// A message if one arrives within `wait`.
    pub async fn within(&self, wait: Duration) -> Option<Received> {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }
}

async fn session(
    stream: TcpStream,
    out: mpsc::UnboundedSender<Received>,
    login: Option<(String, String)>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"220 localhost hearth test SMTP\r\n")
        .await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut user: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if login.is_some() {
                b"250-localhost\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            } else {
                b"250-localhost\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            }
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("AUTH PLAIN ") {
            let given = plain_login(&cmd["AUTH PLAIN ".len()..]);
            match (&login, given) {
                (Some(want), Some(got)) if *want == got => {
                    user = Some(got.0);
                    b"235 2.7.0 authenticated\r\n"
                }
                _ => b"535 5.7.8 authentication failed\r\n",
            }
        } else if upper.starts_with("MAIL FROM:") && login.is_some() && user.is_none() {
            b"530 5.7.0 authentication required\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&cmd["MAIL FROM:".len()..]);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&cmd["RCPT TO:".len()..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            let mut too_big = false;
            loop {
                line.clear();
                if read.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let text = line.strip_prefix('.').unwrap_or(&line);
                if data.len() + text.len() > MAX_MESSAGE {
                    too_big = true;
                } else {
                    data.push_str(text);
                }
            }
            if too_big {
                b"552 message too big\r\n"
            } else {
                let _ = out.send(Received {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    user: user.clone(),
                    data,
                });
                b"250 queued\r\n"
            }
        } else if upper == "RSET" {
            to.clear();
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

/// The user and password of an `AUTH PLAIN` initial response
/// (base64 of `authzid NUL user NUL password`).
fn plain_login(b64: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let _authzid = parts.next()?;
    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// `<a@b>` (with optional parameters after it) → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(s), Some(e)) if s < e => arg[s + 1..e].to_owned(),
        _ => arg.split_whitespace().next().unwrap_or("").to_owned(),
    }
}
