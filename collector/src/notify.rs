//! Notification channels: a generic JSON webhook, a Slack-compatible incoming webhook, and
//! e-mail over SMTP. Sending is blocking (the notifier runs on its own thread) and bounded by
//! timeouts.
//!
//! Constraints:
//! 1. Channel secrets (URLs, headers, passwords) never appear in logs, errors or API output:
//!    [`ChannelConfig`]'s `Debug` redacts them and every error text is scrubbed of the URL.
//! 2. Every delivery carries a stable id (`X-Lindi-Delivery` header, e-mail `Message-ID`) so
//!    a receiver can drop the one duplicate a crash between send and record can cause.
//! 3. SMTP speaks plain RFC 5321 (EHLO, MAIL, RCPT, DATA with dot-stuffing, QUIT) to a relay;
//!    point it at a local MTA (postfix, nullmailer) for TLS onwards. Replies are read with a
//!    size limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use lindi_shared::duration::Civil;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// How long one delivery may take on the network.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest SMTP reply line accepted.
const MAX_REPLY_LINE: usize = 4096;

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("{0}")]
    Send(String),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    #[error("SMTP {stage}: {reply}")]
    Smtp { stage: &'static str, reply: String },
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// POST the notification as JSON.
    Webhook,
    /// POST `{"text": …}` (Slack, Mattermost, Rocket.Chat incoming webhooks).
    Slack,
    /// E-mail through an SMTP relay.
    Smtp,
}

/// `[[escalation.channels]]`.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Webhook and Slack: the URL (a secret: it is the credential of most incoming webhooks).
    #[serde(default)]
    pub url: String,
    /// Webhook: extra headers (e.g. `Authorization`); secret.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// SMTP: the relay, host:port.
    #[serde(default)]
    pub server: String,
    /// SMTP: the sender address.
    #[serde(default)]
    pub from: String,
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"<redacted>")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("server", &self.server)
            .field("from", &self.from)
            .finish()
    }
}

impl ChannelConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            ChannelKind::Webhook | ChannelKind::Slack => {
                if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
                    return Err(format!(
                        "channel {}: url must be http:// or https://",
                        self.name
                    ));
                }
            }
            ChannelKind::Smtp => {
                if !self.server.contains(':') || !self.from.contains('@') {
                    return Err(format!(
                        "channel {}: smtp needs server = \"host:port\" and a from address",
                        self.name
                    ));
                }
                if self.from.contains(['\r', '\n', '<', '>']) {
                    return Err(format!("channel {}: bad from address", self.name));
                }
            }
        }
        Ok(())
    }
}

/// One message to deliver.
pub struct Message<'a> {
    /// Stable across retries and restarts.
    pub delivery_id: &'a str,
    /// E-mail address for SMTP; ignored by webhooks.
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    /// The structured notification (webhook body).
    pub json: &'a Value,
    /// The collector's name, for the Message-ID and HELO.
    pub sender_name: &'a str,
}

/// Deliver `m` over `channel`.
pub fn send(channel: &ChannelConfig, m: &Message<'_>) -> Result<(), NotifyError> {
    let scrub = |e: String| {
        let mut e = e.replace(&channel.url, "<channel url>");
        for v in channel.headers.values() {
            e = e.replace(v, "<secret>");
        }
        NotifyError::Send(e)
    };
    match channel.kind {
        ChannelKind::Webhook => post(channel, m, m.json.clone()).map_err(|e| match e {
            NotifyError::Send(s) => scrub(s),
            other => other,
        }),
        ChannelKind::Slack => {
            let body = serde_json::json!({ "text": format!("*{}*\n{}", m.subject, m.text) });
            post(channel, m, body).map_err(|e| match e {
                NotifyError::Send(s) => scrub(s),
                other => other,
            })
        }
        ChannelKind::Smtp => smtp(channel, m),
    }
}

fn post(channel: &ChannelConfig, m: &Message<'_>, body: Value) -> Result<(), NotifyError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(SEND_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(&channel.url)
        .header("X-Lindi-Delivery", m.delivery_id)
        .header(
            "User-Agent",
            concat!("lindi-collector/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &channel.headers {
        req = req.header(k, v);
    }
    let resp = req
        .send_json(&body)
        .map_err(|e| NotifyError::Send(e.to_string()))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(NotifyError::Status(status))
    }
}

/// A header value with no line breaks (so no header injection).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn smtp(channel: &ChannelConfig, m: &Message<'_>) -> Result<(), NotifyError> {
    let io = |stage: &'static str| {
        move |e: std::io::Error| NotifyError::Smtp {
            stage,
            reply: e.to_string(),
        }
    };
    if m.to.contains(['\r', '\n', '<', '>']) || !m.to.contains('@') {
        return Err(NotifyError::Smtp {
            stage: "address",
            reply: format!("{:?} is not an e-mail address", m.to),
        });
    }
    let addr = channel
        .server
        .to_socket_addrs()
        .map_err(io("resolve"))?
        .next()
        .ok_or(NotifyError::Smtp {
            stage: "resolve",
            reply: "no address".into(),
        })?;
    let stream = TcpStream::connect_timeout(&addr, SEND_TIMEOUT).map_err(io("connect"))?;
    stream
        .set_read_timeout(Some(SEND_TIMEOUT))
        .map_err(io("connect"))?;
    stream
        .set_write_timeout(Some(SEND_TIMEOUT))
        .map_err(io("connect"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io("connect"))?);
    let mut w = stream;
    expect(&mut reader, "greeting", 220)?;
    let helo = one_line(m.sender_name).replace(' ', "-");
    command(
        &mut w,
        &mut reader,
        "EHLO",
        &format!("EHLO {helo}\r\n"),
        250,
    )?;
    command(
        &mut w,
        &mut reader,
        "MAIL",
        &format!("MAIL FROM:<{}>\r\n", channel.from),
        250,
    )?;
    command(
        &mut w,
        &mut reader,
        "RCPT",
        &format!("RCPT TO:<{}>\r\n", m.to),
        250,
    )?;
    command(&mut w, &mut reader, "DATA", "DATA\r\n", 354)?;
    let mut msg = String::new();
    msg.push_str(&format!("From: Lindi <{}>\r\n", channel.from));
    msg.push_str(&format!("To: <{}>\r\n", m.to));
    msg.push_str(&format!("Subject: {}\r\n", one_line(m.subject)));
    msg.push_str(&format!(
        "Date: {}\r\n",
        Civil::from_unix(crate::now_s()).rfc5322()
    ));
    msg.push_str(&format!(
        "Message-ID: <{}@{}>\r\n",
        one_line(m.delivery_id).replace(' ', ""),
        helo
    ));
    msg.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    for line in m.text.lines() {
        // Dot-stuffing (RFC 5321 4.5.2).
        if line.starts_with('.') {
            msg.push('.');
        }
        msg.push_str(line);
        msg.push_str("\r\n");
    }
    msg.push_str(".\r\n");
    w.write_all(msg.as_bytes()).map_err(io("DATA"))?;
    expect(&mut reader, "message", 250)?;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(())
}

fn command(
    w: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    stage: &'static str,
    line: &str,
    code: u16,
) -> Result<(), NotifyError> {
    w.write_all(line.as_bytes())
        .map_err(|e| NotifyError::Smtp {
            stage,
            reply: e.to_string(),
        })?;
    expect(r, stage, code)
}

/// Read one (possibly multi-line) reply and check its code.
fn expect(r: &mut BufReader<TcpStream>, stage: &'static str, code: u16) -> Result<(), NotifyError> {
    let mut lines = 0;
    loop {
        let mut line = Vec::new();
        r.by_ref()
            .take(MAX_REPLY_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| NotifyError::Smtp {
                stage,
                reply: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        lines += 1;
        if line.is_empty() || text.len() < 3 || lines > 100 {
            return Err(NotifyError::Smtp {
                stage,
                reply: format!("unexpected reply {text:?}"),
            });
        }
        let got: u16 = text[..3].parse().unwrap_or(0);
        if text.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if got == code {
            Ok(())
        } else {
            Err(NotifyError::Smtp { stage, reply: text })
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-message SMTP server on loopback that records what it was sent.
    fn smtp_sink() -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut data = String::new();
            w.write_all(b"220 sink ESMTP\r\n").unwrap();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        w.write_all(b"250 queued\r\n").unwrap();
                    } else {
                        data.push_str(&line);
                    }
                    continue;
                }
                let reply: &[u8] = match &line[..4] {
                    "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go\r\n"
                    }
                    "QUIT" => {
                        w.write_all(b"221 bye\r\n").unwrap();
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                w.write_all(reply).unwrap();
            }
            data
        });
        (addr, t)
    }

    #[test]
    fn smtp_delivers_with_dot_stuffing_and_clean_headers() {
        let (server, sink) = smtp_sink();
        let ch = ChannelConfig {
            name: "mail".into(),
            kind: ChannelKind::Smtp,
            url: String::new(),
            headers: Default::default(),
            server,
            from: "lindi@example.org".into(),
        };
        ch.validate().unwrap();
        send(
            &ch,
            &Message {
                delivery_id: "n-1",
                to: "ana@example.org",
                subject: "TLP:AMBER ticket 7\r\nBcc: evil@example.org",
                text: "line one\n.starts with a dot",
                json: &Value::Null,
                sender_name: "lindi",
            },
        )
        .unwrap();
        let data = sink.join().unwrap();
        assert!(
            data.contains("Subject: TLP:AMBER ticket 7  Bcc: evil@example.org\r\n"),
            "{data}"
        );
        assert!(data.contains("\r\n..starts with a dot\r\n"));
        assert!(data.contains("Message-ID: <n-1@lindi>"));
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let ch = ChannelConfig {
            name: "hook".into(),
            kind: ChannelKind::Webhook,
            url: "http://127.0.0.1:9/secret-token-123".into(),
            headers: [("Authorization".to_string(), "Bearer s3cret".to_string())].into(),
            server: String::new(),
            from: String::new(),
        };
        let dbg = format!("{ch:?}");
        assert!(
            !dbg.contains("secret-token-123") && !dbg.contains("s3cret"),
            "{dbg}"
        );
        let e = send(
            &ch,
            &Message {
                delivery_id: "n-2",
                to: "",
                subject: "s",
                text: "t",
                json: &Value::Null,
                sender_name: "lindi",
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            !e.contains("secret-token-123") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
