//! Real notification receivers on loopback for end-to-end tests: an SMTP server that accepts
//! and records every message, and an HTTP server that records every POST. Both speak their
//! protocol over real sockets, accept any number of connections, bound what they read, and
//! stop when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest message or request body a receiver keeps.
const MAX_BODY: usize = 1 << 20;

/// One e-mail as received.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

/// One HTTP request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

struct Server<T> {
    addr: String,
    got: Arc<Mutex<Vec<T>>>,
    stop: Arc<AtomicBool>,
}

impl<T: Send + 'static> Server<T> {
    fn start(handle: fn(TcpStream, &Mutex<Vec<T>>) -> std::io::Result<()>) -> Server<T> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        let g = g.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                            let _ = handle(conn, &g);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Server { addr, got, stop }
    }
}

impl<T> Drop for Server<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An SMTP server (RFC 5321: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
pub struct SmtpSink(Server<Mail>);

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink(Server::start(smtp_session))
    }

    /// host:port
    pub fn addr(&self) -> &str {
        &self.0.addr
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.0.got.lock().unwrap().clone()
    }
}

fn smtp_session(conn: TcpStream, got: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    w.write_all(b"220 lindi-test-sink ESMTP\r\n")?;
    let mut mail = Mail {
        from: String::new(),
        to: vec![],
        data: String::new(),
    };
    loop {
        let mut line = String::new();
        if r.by_ref().take(4096).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-lindi-test-sink\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 ok\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = line[10..].trim().trim_matches(['<', '>']).to_string();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            mail.to
                .push(line[8..].trim().trim_matches(['<', '>']).to_string());
            b"250 ok\r\n"
        } else if upper.starts_with("RSET") {
            mail.to.clear();
            b"250 ok\r\n"
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.by_ref().take(MAX_BODY as u64).read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                if data.len() < MAX_BODY {
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                }
            }
            mail.data = data.replace("\r\n", "\n");
            got.lock().unwrap().push(mail.clone());
            mail.to.clear();
            b"250 queued\r\n"
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            b"500 unknown command\r\n"
        };
        w.write_all(reply)?;
    }
}

/// An HTTP/1.1 server that answers every request 200 and records it.
pub struct HttpReceiver(Server<Request>);

impl HttpReceiver {
    pub fn start() -> HttpReceiver {
        HttpReceiver(Server::start(http_session))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.0.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.0.got.lock().unwrap().clone()
    }
}

fn http_session(conn: TcpStream, got: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    loop {
        let mut start = String::new();
        if r.by_ref().take(8192).read_line(&mut start)? == 0 {
            return Ok(());
        }
        let path = start.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            if r.by_ref().take(8192).read_line(&mut l)? == 0 {
                return Ok(());
            }
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
            .min(MAX_BODY);
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        got.lock().unwrap().push(Request {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        });
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")?;
    }
}
