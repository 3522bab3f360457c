//! HTTP/1.x over reassembled TCP streams: requests and responses paired into transactions,
//! bodies de-chunked and decompressed, and the buffers rules inspect (`http.uri`,
//! `http.host`, `file.data`, ...).
//!
//! Why our own parser and not `httparse`: detection must read what a browser or a server
//! accepts, including what the standard forbids and evasion tools send on purpose: folded
//! header lines, names with spaces before the colon, bare LF line ends, whitespace before
//! chunk sizes, HTTP/0.9 requests, bodies that end at connection close, compressed bodies with
//! damaged headers. `httparse` rightly rejects these; this parser accepts them the way the
//! receiving end (and Suricata's libhtp) does.
//!
//! Invariants:
//! 1. Memory is bounded: a header block over `header_limit` ends parsing of that direction
//!    (counted as failed); bodies are kept up to `body_limit`, before and after
//!    decompression (Suricata's response-body-limit applies to what libhtp decompressed),
//!    inner layers up to `decompress_limit`, at most `max_layers` layers.
//! 2. Each transaction is reported once per side, when that side is complete (or when the
//!    stream ends before it is).

use std::collections::VecDeque;
use std::io::Write;

use crate::detect::{Buffer, Parts, Side};

/// Limits of the parser.
#[derive(Clone, Copy, Debug)]
pub struct HttpConfig {
    pub header_limit: usize,
    pub body_limit: usize,
    pub decompress_limit: usize,
    pub max_layers: usize,
    /// Transactions kept while waiting for their responses.
    pub max_txs: usize,
    /// Keep bodies (and decompress response bodies). Only rules read them (`file.data`,
    /// `http.request_body`, `http.response_body`): without such rules bodies are only
    /// counted.
    pub keep_bodies: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_limit: 64 << 10,
            // Suricata's default request- and response-body-limit (libhtp default-config).
            body_limit: 100 << 10,
            decompress_limit: 4 << 20,
            max_layers: 2,
            max_txs: 64,
            keep_bodies: true,
        }
    }
}

/// Methods that mark the start of an HTTP request (content-based detection).
const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"CONNECT",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"SEARCH",
    b"REPORT",
    b"SUBSCRIBE",
];

/// Does this look like the start of an HTTP request?
pub fn looks_like_request(data: &[u8]) -> bool {
    METHODS.iter().any(|m| {
        data.len() > m.len()
            && data[..m.len()].eq_ignore_ascii_case(m)
            && matches!(data[m.len()], b' ' | b'\t')
    })
}

/// Does this look like the start of an HTTP response?
pub fn looks_like_response(data: &[u8]) -> bool {
    data.len() >= 5 && data[..5].eq_ignore_ascii_case(b"HTTP/")
}

/// One request and its response.
#[derive(Clone, Debug, Default)]
pub struct HttpTx {
    pub id: u64,
    pub method: Vec<u8>,
    pub uri_raw: Vec<u8>,
    pub uri_norm: Vec<u8>,
    pub request_protocol: Vec<u8>,
    pub request_line: Vec<u8>,
    pub request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub request_headers_raw: Vec<u8>,
    pub request_body: Vec<u8>,
    pub host_raw: Vec<u8>,
    pub host_norm: Vec<u8>,
    pub request_done: bool,
    pub response_protocol: Vec<u8>,
    pub status: Vec<u8>,
    pub status_msg: Vec<u8>,
    pub response_line: Vec<u8>,
    pub response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub response_headers_raw: Vec<u8>,
    /// The response body after de-chunking, before decompression.
    pub response_body_raw: Vec<u8>,
    /// The response body as the client sees it (decompressed; empty when the parser's
    /// `keep_bodies` is off).
    pub response_body: Vec<u8>,
    /// Response body bytes seen after de-chunking, all of them (not only those kept):
    /// Suricata's `http.length`.
    pub response_body_len: u64,
    pub response_done: bool,
    // Inspection buffers built once per side.
    req_header_buf: Vec<u8>,
    req_names_buf: Vec<u8>,
    req_start: Vec<u8>,
    req_lines: Vec<Vec<u8>>,
    resp_header_buf: Vec<u8>,
    resp_names_buf: Vec<u8>,
    resp_start: Vec<u8>,
    resp_lines: Vec<Vec<u8>>,
}

/// Header names compare as libhtp compares them: case and NUL bytes ignored.
fn name_is(name: &[u8], want: &str) -> bool {
    let mut n = name.iter().filter(|b| **b != 0);
    let mut w = want.as_bytes().iter();
    loop {
        match (n.next(), w.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => {}
            _ => return false,
        }
    }
}

fn header<'a>(headers: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| name_is(n, name))
        .map(|(_, v)| v.as_slice())
}

fn header_all(headers: &[(Vec<u8>, Vec<u8>)], name: &str) -> Vec<u8> {
    let mut out = vec![];
    for (n, v) in headers {
        if name_is(n, name) {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v);
        }
    }
    out
}

fn build_header_bufs(
    headers: &[(Vec<u8>, Vec<u8>)],
    start_line: &[u8],
) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let mut all = vec![];
    let mut names = b"\r\n".to_vec();
    let mut lines = vec![];
    for (n, v) in headers {
        let mut line = n.clone();
        line.extend_from_slice(b": ");
        line.extend_from_slice(v);
        all.extend_from_slice(&line);
        all.extend_from_slice(b"\r\n");
        names.extend_from_slice(n);
        names.extend_from_slice(b"\r\n");
        lines.push(line);
    }
    names.extend_from_slice(b"\r\n");
    let mut start = start_line.to_vec();
    start.extend_from_slice(b"\r\n");
    start.extend_from_slice(&all);
    start.extend_from_slice(b"\r\n");
    (all, names, start, lines)
}

fn some(v: &[u8]) -> Parts<'_> {
    smallvec::smallvec![v]
}

impl HttpTx {
    /// The instances of buffer `b` for an inspection of `side`.
    pub fn buffer(&self, b: Buffer, side: Side) -> Parts<'_> {
        let resp = side == Side::Response;
        let hdr = |name: &str| -> Parts {
            let h = if resp {
                header(&self.response_headers, name)
            } else {
                header(&self.request_headers, name)
            };
            h.map(some).unwrap_or_default()
        };
        let req_hdr = |name: &str| -> Parts {
            header(&self.request_headers, name)
                .map(some)
                .unwrap_or_default()
        };
        let resp_hdr = |name: &str| -> Parts {
            if !resp {
                return Parts::new();
            }
            header(&self.response_headers, name)
                .map(some)
                .unwrap_or_default()
        };
        if resp && !self.response_done && b.side() == Side::Response {
            return Parts::new();
        }
        match b {
            Buffer::HttpMethod => some(&self.method),
            Buffer::HttpUri => some(&self.uri_norm),
            Buffer::HttpRawUri => some(&self.uri_raw),
            Buffer::HttpHost => {
                if self.host_raw.is_empty() {
                    Parts::new()
                } else {
                    some(&self.host_norm)
                }
            }
            Buffer::HttpRawHost => {
                if self.host_raw.is_empty() {
                    Parts::new()
                } else {
                    some(&self.host_raw)
                }
            }
            Buffer::HttpUserAgent => req_hdr("user-agent"),
            Buffer::HttpCookie => {
                if resp {
                    hdr("set-cookie")
                } else {
                    hdr("cookie")
                }
            }
            Buffer::HttpAccept => req_hdr("accept"),
            Buffer::HttpAcceptEnc => req_hdr("accept-encoding"),
            Buffer::HttpAcceptLang => req_hdr("accept-language"),
            Buffer::HttpReferer => req_hdr("referer"),
            Buffer::HttpLocation => resp_hdr("location"),
            Buffer::HttpServer => resp_hdr("server"),
            Buffer::HttpConnection => hdr("connection"),
            Buffer::HttpContentType => hdr("content-type"),
            Buffer::HttpContentLen => hdr("content-length"),
            Buffer::HttpHeader => {
                let v = if resp {
                    &self.resp_header_buf
                } else {
                    &self.req_header_buf
                };
                if v.is_empty() { Parts::new() } else { some(v) }
            }
            Buffer::HttpRawHeader => {
                let v = if resp {
                    &self.response_headers_raw
                } else {
                    &self.request_headers_raw
                };
                if v.is_empty() { Parts::new() } else { some(v) }
            }
            Buffer::HttpHeaderNames => {
                if resp {
                    some(&self.resp_names_buf)
                } else {
                    some(&self.req_names_buf)
                }
            }
            Buffer::HttpRequestHeader => self.req_lines.iter().map(|l| l.as_slice()).collect(),
            Buffer::HttpResponseHeader => self.resp_lines.iter().map(|l| l.as_slice()).collect(),
            Buffer::HttpRequestBody => {
                if self.request_body.is_empty() {
                    Parts::new()
                } else {
                    some(&self.request_body)
                }
            }
            Buffer::HttpResponseBody | Buffer::FileData => {
                let v = if resp || b == Buffer::HttpResponseBody {
                    &self.response_body
                } else {
                    &self.request_body
                };
                if v.is_empty() || (b == Buffer::HttpResponseBody && !resp) {
                    Parts::new()
                } else {
                    some(v)
                }
            }
            Buffer::HttpStatCode => some(&self.status),
            Buffer::HttpStatMsg => some(&self.status_msg),
            Buffer::HttpRequestLine => some(&self.request_line),
            Buffer::HttpResponseLine => some(&self.response_line),
            Buffer::HttpProtocol => {
                let v = if resp {
                    &self.response_protocol
                } else {
                    &self.request_protocol
                };
                if v.is_empty() { Parts::new() } else { some(v) }
            }
            Buffer::HttpStart => {
                if resp {
                    some(&self.resp_start)
                } else {
                    some(&self.req_start)
                }
            }
            _ => Parts::new(),
        }
    }
}

/// Something the parser completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpEvent {
    Request(u64),
    Response(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Line,
    Headers,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    /// A response body of declared length ended: lines that follow and do not start a new
    /// response still belong to it (as libhtp reads them).
    AfterBody,
    /// Parsing of this direction stopped (limits or garbage).
    Failed,
}

#[derive(Debug)]
struct Dir {
    buf: Vec<u8>,
    state: State,
    /// Index into `txs` of the transaction this direction is working on.
    tx: Option<u64>,
}

impl Default for Dir {
    fn default() -> Self {
        Dir {
            buf: vec![],
            state: State::Line,
            tx: None,
        }
    }
}

/// Counters of one connection's parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub failed: u64,
    pub truncated_bodies: u64,
    pub dropped_txs: u64,
}

/// The HTTP state of one connection.
#[derive(Debug, Default)]
pub struct HttpConn {
    cfg: HttpConfig,
    txs: VecDeque<HttpTx>,
    next_id: u64,
    /// Id of the next transaction a response belongs to.
    next_response: u64,
    req: Dir,
    resp: Dir,
    pub stats: HttpStats,
}

/// libhtp's whitespace: SP, HT, CR, LF, VT, FF.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// The next line from `pos`, with libhtp's line ends: LF (also LF CR), CRLF, and a CR
/// followed by anything but LF or CR. `None` until the end of the line is known. Returns the
/// line without its end and whether it ended in a bare CR.
fn next_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize, bool)> {
    let rest = &buf[pos..];
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\n' => {
                // LF CR is one line end, unless the CR starts a CRLF empty line.
                let end = match (rest.get(i + 1), rest.get(i + 2)) {
                    (Some(b'\r'), Some(b'\r')) => i + 2,
                    (Some(b'\r'), None) => return None,
                    _ => i + 1,
                };
                return Some((&rest[..i], pos + end, false));
            }
            b'\r' => match rest.get(i + 1) {
                None => return None,
                Some(b'\n') => return Some((&rest[..i], pos + i + 2, false)),
                Some(b'\r') => i += 1,
                Some(_) => return Some((&rest[..i], pos + i + 1, true)),
            },
            _ => i += 1,
        }
    }
    None
}

fn take_line(buf: &[u8], pos: &mut usize) -> Option<Vec<u8>> {
    let (line, next, _) = next_line(buf, *pos)?;
    let line = line.to_vec();
    *pos = next;
    Some(line)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !is_ws(*b)).unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !is_ws(*b))
        .map(|e| e + 1)
        .unwrap_or(s);
    &v[s..e.max(s)]
}

/// Case-insensitive search that ignores NUL bytes in the haystack.
fn contains_nocase(hay: &[u8], needle: &[u8]) -> bool {
    let clean: Vec<u8> = hay.iter().copied().filter(|b| *b != 0).collect();
    clean
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

impl HttpConn {
    pub fn new(cfg: HttpConfig) -> Self {
        HttpConn {
            cfg,
            ..Default::default()
        }
    }

    pub fn tx(&self, id: u64) -> Option<&HttpTx> {
        self.txs.iter().find(|t| t.id == id)
    }

    /// Bytes this connection holds (buffered input, headers and bodies of open transactions).
    pub fn held(&self) -> usize {
        self.req.buf.len()
            + self.resp.buf.len()
            + self
                .txs
                .iter()
                .map(|t| {
                    t.request_body.len()
                        + t.response_body_raw.len()
                        + t.response_body.len()
                        + t.request_headers_raw.len() * 3
                        + t.response_headers_raw.len() * 3
                })
                .sum::<usize>()
    }

    /// Drop transactions whose both sides are complete, except the last.
    pub fn retire(&mut self) -> Option<u64> {
        while self.txs.len() > 1
            && self
                .txs
                .front()
                .is_some_and(|t| t.request_done && t.response_done)
        {
            self.txs.pop_front();
        }
        self.txs.front().map(|t| t.id)
    }

    fn tx_mut(&mut self, id: u64) -> Option<&mut HttpTx> {
        self.txs.iter_mut().find(|t| t.id == id)
    }

    fn new_tx(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.txs.len() >= self.cfg.max_txs {
            self.txs.pop_front();
            self.stats.dropped_txs += 1;
        }
        self.txs.push_back(HttpTx {
            id,
            ..Default::default()
        });
        id
    }

    /// New in-order bytes of one direction.
    pub fn data(&mut self, to_server: bool, data: &[u8]) -> Vec<HttpEvent> {
        let mut ev = vec![];
        let dir = if to_server {
            &mut self.req
        } else {
            &mut self.resp
        };
        if dir.state == State::Failed {
            return ev;
        }
        dir.buf.extend_from_slice(data);
        self.parse(to_server, &mut ev);
        ev
    }

    /// The direction ended (FIN, or the flow is gone): finish what was in progress.
    pub fn close(&mut self, to_server: bool) -> Vec<HttpEvent> {
        let mut ev = vec![];
        if to_server {
            let st = self.req.state;
            if let Some(id) = self.req.tx.take()
                && !matches!(st, State::Line | State::Failed)
            {
                if !matches!(st, State::UntilClose) {
                    self.stats.truncated_bodies += 1;
                }
                self.finish_request(id, &mut ev);
            }
            self.req.state = State::Failed;
        } else {
            let st = self.resp.state;
            let rest = std::mem::take(&mut self.resp.buf);
            if st == State::Line && !trim(&rest).is_empty() {
                // An HTTP/0.9 style response with no line end before the close.
                let id = self.response_tx();
                self.body_bytes(false, id, &rest);
                self.finish_response(id, &mut ev);
            } else if let Some(id) = self.resp.tx.take()
                && !matches!(st, State::Line | State::Failed)
            {
                match st {
                    State::Headers => {
                        self.headers_done(false, id, &rest);
                    }
                    State::UntilClose | State::AfterBody | State::Chunked(Chunk::Size) => {
                        self.body_bytes(false, id, &rest);
                    }
                    _ => self.stats.truncated_bodies += 1,
                }
                self.finish_response(id, &mut ev);
            }
            self.resp.state = State::Failed;
        }
        ev
    }

    fn finish_request(&mut self, id: u64, ev: &mut Vec<HttpEvent>) {
        if let Some(t) = self.tx_mut(id)
            && !t.request_done
        {
            t.request_done = true;
            ev.push(HttpEvent::Request(id));
        }
    }

    fn finish_response(&mut self, id: u64, ev: &mut Vec<HttpEvent>) {
        let cfg = self.cfg;
        if let Some(t) = self.tx_mut(id)
            && !t.response_done
        {
            // The raw body is not inspected: free it now.
            let raw = std::mem::take(&mut t.response_body_raw);
            if cfg.keep_bodies {
                t.response_body = decode_body(&t.response_headers, &raw, &cfg);
            }
            t.response_done = true;
            ev.push(HttpEvent::Response(id));
        }
    }

    fn body_bytes(&mut self, to_server: bool, id: u64, data: &[u8]) {
        let (keep, limit) = (self.cfg.keep_bodies, self.cfg.body_limit);
        let mut truncated = false;
        if let Some(t) = self.tx_mut(id) {
            if !to_server {
                t.response_body_len += data.len() as u64;
            }
            if !keep {
                return;
            }
            let body = if to_server {
                &mut t.request_body
            } else {
                &mut t.response_body_raw
            };
            let room = limit.saturating_sub(body.len());
            truncated = data.len() > room;
            body.extend_from_slice(&data[..data.len().min(room)]);
        }
        if truncated {
            self.stats.truncated_bodies += 1;
        }
    }

    fn dir(&mut self, request: bool) -> &mut Dir {
        if request {
            &mut self.req
        } else {
            &mut self.resp
        }
    }

    /// A message of this direction is complete: report it and wait for the next.
    fn end_message(&mut self, request: bool, id: u64, ev: &mut Vec<HttpEvent>) {
        let d = self.dir(request);
        d.state = State::Line;
        d.tx = None;
        if request {
            self.finish_request(id, ev);
        } else {
            self.finish_response(id, ev);
        }
    }

    /// Parse what one direction has buffered. The states after the start line and headers
    /// (bodies by length, chunks or close) are the same for requests and responses.
    fn parse(&mut self, request: bool, ev: &mut Vec<HttpEvent>) {
        let mut buf = std::mem::take(&mut self.dir(request).buf);
        let mut pos = 0;
        loop {
            let state = self.dir(request).state;
            if matches!(state, State::Failed) {
                pos = buf.len();
                break;
            }
            if state == State::Line {
                let more = if request {
                    self.request_line(&buf, &mut pos, ev)
                } else {
                    self.status_line(&buf, &mut pos)
                };
                if !more {
                    break;
                }
                continue;
            }
            // Every other state belongs to an open message; without one, stop reading.
            let Some(id) = self.dir(request).tx else {
                self.dir(request).state = State::Failed;
                self.stats.failed += 1;
                continue;
            };
            match state {
                State::Headers => {
                    let Some(end) = header_block_end(&buf[pos..]) else {
                        if buf.len() - pos > self.cfg.header_limit {
                            self.dir(request).state = State::Failed;
                            self.stats.failed += 1;
                        }
                        break;
                    };
                    let block = buf[pos..pos + end].to_vec();
                    pos += end;
                    let st = self.headers_done(request, id, &block);
                    self.dir(request).state = st;
                    if st != State::Line {
                        continue;
                    }
                    let interim = !request
                        && self
                            .tx(id)
                            .is_some_and(|t| t.status.starts_with(b"1") && t.status != b"101");
                    if interim {
                        // 100 Continue and friends: the real response follows.
                        self.resp.tx = None;
                        if let Some(t) = self.tx_mut(id) {
                            t.response_headers.clear();
                            t.response_headers_raw.clear();
                        }
                        self.next_response = id;
                    } else {
                        self.end_message(request, id, ev);
                    }
                }
                State::Length(n) => {
                    let take = n.min((buf.len() - pos) as u64) as usize;
                    self.body_bytes(request, id, &buf[pos..pos + take]);
                    pos += take;
                    let left = n - take as u64;
                    if left > 0 {
                        self.dir(request).state = State::Length(left);
                        break;
                    }
                    if request {
                        self.end_message(request, id, ev);
                    } else {
                        self.resp.state = State::AfterBody;
                    }
                }
                State::Chunked(c) => match self.chunk_step(request, id, c, &buf, &mut pos) {
                    Some(State::Line) => self.end_message(request, id, ev),
                    Some(s) => self.dir(request).state = s,
                    None => break,
                },
                State::AfterBody if !request => {
                    let rest = &buf[pos..];
                    let skip = rest
                        .iter()
                        .position(|b| !is_ws(*b) && *b != 0)
                        .unwrap_or(rest.len());
                    if rest.len() - skip < 4 {
                        break;
                    }
                    if rest[skip..skip + 4].eq_ignore_ascii_case(b"http") {
                        self.end_message(request, id, ev);
                        continue;
                    }
                    let Some((_, next, _)) = next_line(&buf, pos) else {
                        break;
                    };
                    self.body_bytes(request, id, &buf[pos..next]);
                    pos = next;
                }
                _ => {
                    // UntilClose (and AfterBody, which requests never reach).
                    self.body_bytes(request, id, &buf[pos..]);
                    pos = buf.len();
                    break;
                }
            }
        }
        buf.drain(..pos);
        self.dir(request).buf = buf;
    }

    /// The request line; false when more data is needed.
    fn request_line(&mut self, buf: &[u8], pos: &mut usize, ev: &mut Vec<HttpEvent>) -> bool {
        let Some(line) = take_line(buf, pos) else {
            return false;
        };
        if trim(&line).is_empty() {
            return true;
        }
        let id = self.new_tx();
        let mut parts = line
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|p| !p.is_empty());
        let method = parts.next().unwrap_or_default().to_vec();
        let uri = parts.next().unwrap_or_default().to_vec();
        let proto: Vec<u8> = parts.collect::<Vec<_>>().join(&b' ');
        // No protocol but a header line follows: headers anyway (as libhtp).
        let headers_follow = next_line(buf, *pos)
            .is_some_and(|(l, _, _)| !l.is_empty() && !is_ws(l[0]) && l.contains(&b':'));
        let http09 = proto.is_empty() && !headers_follow;
        let Some(t) = self.tx_mut(id) else {
            return true;
        };
        t.uri_norm = normalize_uri(&uri);
        t.method = method;
        t.uri_raw = uri;
        t.request_protocol = proto;
        if http09 {
            // HTTP/0.9: no headers, no body.
            (t.req_header_buf, t.req_names_buf, t.req_start, t.req_lines) =
                build_header_bufs(&[], &line);
            t.request_line = line;
            self.finish_request(id, ev);
            return true;
        }
        t.request_line = line;
        self.req.tx = Some(id);
        self.req.state = State::Headers;
        true
    }

    /// The status line (or junk before it, or an HTTP/0.9 body); false when more data is
    /// needed.
    fn status_line(&mut self, buf: &[u8], pos: &mut usize) -> bool {
        // Skip blank lines between messages.
        let rest = &buf[*pos..];
        *pos += rest
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(rest.len());
        if *pos >= buf.len() {
            return false;
        }
        let Some((raw, next, _)) = next_line(buf, *pos) else {
            if buf.len() - *pos > self.cfg.header_limit {
                self.resp.state = State::Failed;
                self.stats.failed += 1;
            }
            return false;
        };
        let skip = raw
            .iter()
            .position(|b| !is_ws(*b) && *b != 0)
            .unwrap_or(raw.len());
        let line = raw[skip..].to_vec();
        let status_line = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"http");
        if !status_line {
            // Junk before a status line is skipped; anything else is an HTTP/0.9 style
            // response: a body to the close.
            if raw.len() <= 2 || matches!(buf.get(next), Some(b'H' | b'h')) {
                *pos = next;
                return true;
            }
            self.resp.tx = Some(self.response_tx());
            self.resp.state = State::UntilClose;
            return true;
        }
        *pos = next;
        let id = self.response_tx();
        self.resp.tx = Some(id);
        let mut parts = line.splitn(2, |b| *b == b' ' || *b == b'\t');
        let proto = parts.next().unwrap_or_default().to_vec();
        let rest = trim(parts.next().unwrap_or_default());
        let (code, msg) = match rest.iter().position(|b| *b == b' ') {
            Some(i) => (rest[..i].to_vec(), trim(&rest[i + 1..]).to_vec()),
            None => (rest.to_vec(), vec![]),
        };
        if let Some(t) = self.tx_mut(id) {
            t.response_line = line;
            t.response_protocol = proto;
            t.status = code;
            t.status_msg = msg;
        }
        self.resp.state = State::Headers;
        true
    }

    /// The transaction the next response belongs to (a new one if no request is waiting).
    fn response_tx(&mut self) -> u64 {
        let id = self.next_response;
        if self.tx(id).is_some() {
            self.next_response += 1;
            return id;
        }
        // No request waits (none came, or limits dropped it): a fresh transaction.
        let id = self.new_tx();
        self.next_response = id + 1;
        id
    }

    /// Header block complete: store headers and say what comes next.
    fn headers_done(&mut self, request: bool, id: u64, block: &[u8]) -> State {
        let http11 = self
            .tx(id)
            .map(|t| {
                let p = if request {
                    &t.request_protocol
                } else {
                    &t.response_protocol
                };
                p.eq_ignore_ascii_case(b"HTTP/1.1")
            })
            .unwrap_or(false);
        let headers = parse_headers(block, http11);
        let cfg_head = self
            .tx(id)
            .map(|t| t.method.eq_ignore_ascii_case(b"HEAD"))
            .unwrap_or(false);
        let Some(t) = self.tx_mut(id) else {
            return State::Line;
        };
        let te = header_all(&headers, "transfer-encoding");
        let cl = header(&headers, "content-length").map(|v| trim(v).to_vec());
        let chunked = contains_nocase(&te, b"chunked");
        let length = cl.as_ref().and_then(|v| {
            let digits: Vec<u8> = v.iter().copied().take_while(u8::is_ascii_digit).collect();
            std::str::from_utf8(&digits).ok()?.parse::<u64>().ok()
        });
        if request {
            let line = t.request_line.clone();
            let (all, names, start, lines) = build_header_bufs(&headers, &line);
            (t.req_header_buf, t.req_names_buf, t.req_start, t.req_lines) =
                (all, names, start, lines);
            t.request_headers_raw = block.to_vec();
            // As libhtp: the host named in the request target (an absolute URI, or the
            // authority of a CONNECT) wins over the Host header.
            let from_uri = if t.method.eq_ignore_ascii_case(b"CONNECT") {
                Some(t.uri_raw.as_slice())
            } else {
                uri_authority(&t.uri_raw)
            };
            if let Some(h) = from_uri.filter(|h| !h.is_empty()) {
                t.host_raw = h.to_vec();
                t.host_norm = normalize_host(h);
            } else if let Some(h) = header(&headers, "host") {
                t.host_raw = h.to_vec();
                t.host_norm = normalize_host(h);
            }
            t.request_headers = headers;
            if chunked {
                State::Chunked(Chunk::Size)
            } else {
                match length {
                    Some(n) if n > 0 => State::Length(n),
                    _ => State::Line,
                }
            }
        } else {
            let line = t.response_line.clone();
            let (all, names, start, lines) = build_header_bufs(&headers, &line);
            (
                t.resp_header_buf,
                t.resp_names_buf,
                t.resp_start,
                t.resp_lines,
            ) = (all, names, start, lines);
            t.response_headers_raw = block.to_vec();
            t.response_headers = headers;
            let status = std::str::from_utf8(&t.status)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(200);
            // As libhtp: 1xx, 204 and 304 have no body unless one is declared.
            let no_body_status = status == 204 || status == 304 || (100..200).contains(&status);
            if cfg_head || (no_body_status && !chunked && length.is_none()) {
                State::Line
            } else if chunked {
                State::Chunked(Chunk::Size)
            } else {
                match length {
                    Some(0) => State::Line,
                    Some(n) => State::Length(n),
                    None => State::UntilClose,
                }
            }
        }
    }

    /// One step of a chunked body; `None` when more data is needed.
    fn chunk_step(
        &mut self,
        request: bool,
        id: u64,
        c: Chunk,
        buf: &[u8],
        pos: &mut usize,
    ) -> Option<State> {
        match c {
            Chunk::Size => {
                let start = *pos;
                let Some(line) = take_line(buf, pos) else {
                    // No line end yet: once 8 bytes are here and the first that is not
                    // whitespace is no hex digit, this is no chunked body (libhtp's probe).
                    let rest = &buf[start..];
                    if rest.len() >= 8
                        && rest
                            .iter()
                            .find(|b| !is_ws(**b))
                            .is_some_and(|b| !b.is_ascii_hexdigit())
                    {
                        return Some(State::UntilClose);
                    }
                    return None;
                };
                let t = trim(&line);
                if t.is_empty() {
                    return Some(State::Chunked(Chunk::Size));
                }
                let hex: Vec<u8> = t
                    .iter()
                    .copied()
                    .take_while(u8::is_ascii_hexdigit)
                    .collect();
                let size = if hex.is_empty() || hex.len() > 15 {
                    None
                } else {
                    u64::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()
                };
                match size {
                    Some(0) => Some(State::Chunked(Chunk::Trailers)),
                    Some(n) => Some(State::Chunked(Chunk::Data(n))),
                    None => {
                        // Not a chunk size: what follows is the body as it is, to the close.
                        *pos = start;
                        Some(State::UntilClose)
                    }
                }
            }
            Chunk::Data(n) => {
                let avail = (buf.len() - *pos) as u64;
                if avail == 0 {
                    return None;
                }
                let take = n.min(avail) as usize;
                let d = buf[*pos..*pos + take].to_vec();
                self.body_bytes(request, id, &d);
                *pos += take;
                let left = n - take as u64;
                Some(State::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                }))
            }
            Chunk::DataEnd => {
                let rest = &buf[*pos..];
                if rest.is_empty() {
                    return None;
                }
                // Expect CRLF; tolerate its absence (the next chunk size follows directly).
                if rest[0] == b'\r' {
                    if rest.len() < 2 {
                        return None;
                    }
                    *pos += if rest[1] == b'\n' { 2 } else { 1 };
                } else if rest[0] == b'\n' {
                    *pos += 1;
                }
                Some(State::Chunked(Chunk::Size))
            }
            Chunk::Trailers => {
                let line = take_line(buf, pos)?;
                if trim(&line).is_empty() {
                    Some(State::Line)
                } else {
                    Some(State::Chunked(Chunk::Trailers))
                }
            }
        }
    }
}

/// Lines of a header block (through its empty line), if the block is complete: the length
/// of the block and its lines.
fn header_lines(data: &[u8]) -> Option<(usize, Vec<&[u8]>)> {
    let mut pos = 0;
    let mut lines = vec![];
    let mut prev_lf_cr = false;
    loop {
        let start = pos;
        let (line, next, bare_cr) = next_line(data, pos)?;
        pos = next;
        let end_len = next - start - line.len();
        if line.is_empty() {
            if bare_cr {
                continue; // a lone CR is not the end of the headers
            }
            // LF CR CR LF CR LF is two line ends (libhtp): take the trailing CR (LF) too.
            if prev_lf_cr && end_len == 2 {
                match data.get(pos) {
                    Some(b'\r') => {
                        pos += 1;
                        match data.get(pos) {
                            Some(b'\n') => pos += 1,
                            Some(_) => {}
                            None => return None,
                        }
                    }
                    Some(_) => {}
                    None => return None,
                }
            }
            return Some((pos, lines));
        }
        prev_lf_cr = end_len == 2 && data[next - 2] == b'\n';
        // One space or tab ended by a bare LF, and no LF next, ends the headers (libhtp).
        if line.len() == 1
            && matches!(line[0], b' ' | b'\t')
            && end_len == 1
            && data[next - 1] == b'\n'
        {
            match data.get(pos) {
                None => return None,
                Some(b'\n') => {}
                Some(_) => return Some((pos, lines)),
            }
        }
        lines.push(line);
    }
}

/// Length of the header block at the start of `data` (through its empty line), if complete.
fn header_block_end(data: &[u8]) -> Option<usize> {
    header_lines(data).map(|(n, _)| n)
}

/// Header lines of a block: folded lines joined, names and values trimmed.
fn parse_headers(block: &[u8], http11: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let lines = header_lines(block)
        .map(|(_, l)| l)
        .unwrap_or_else(|| block.split(|b| *b == b'\n').collect());
    let mut logical: Vec<Vec<u8>> = vec![];
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t' | 0)
            && let Some(prev) = logical.last_mut()
        {
            // A folded line that carries a header of its own starts a new header (HTTP/1.1).
            if http11 && line.contains(&b':') && prev.contains(&b':') && trim(line).len() > 1 {
                logical.push(line[1..].to_vec());
                continue;
            }
            prev.push(b' ');
            prev.extend_from_slice(trim(line));
            continue;
        }
        logical.push(line.to_vec());
    }
    logical
        .into_iter()
        .filter_map(|l| {
            let colon = l.iter().position(|b| *b == b':')?;
            let name = trim(&l[..colon]).to_vec();
            if name.is_empty() {
                return None;
            }
            Some((name, trim(&l[colon + 1..]).to_vec()))
        })
        .collect()
}

/// `host:port`, `HOST.` -> `host`.
fn normalize_host(h: &[u8]) -> Vec<u8> {
    let h = trim(h);
    let h = if h.starts_with(b"[") {
        // [v6]:port
        match h.iter().position(|b| *b == b']') {
            Some(e) => &h[..=e],
            None => h,
        }
    } else {
        match h.iter().rposition(|b| *b == b':') {
            Some(c) if h[c + 1..].iter().all(u8::is_ascii_digit) => &h[..c],
            _ => h,
        }
    };
    let mut v = h.to_ascii_lowercase();
    while v.last() == Some(&b'.') {
        v.pop();
    }
    v
}

fn uri_authority(uri: &[u8]) -> Option<&[u8]> {
    // As libhtp: only an absolute URI names a host, a scheme up to the first colon and then
    // "//". A target that starts with "/" names none, whatever its query holds
    // ("/c.gif?tp=http://other.example/").
    if uri.first() == Some(&b'/') {
        return None;
    }
    let colon = memchr::memchr(b':', uri)?;
    let rest = uri[colon + 1..].strip_prefix(b"//")?;
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && i + 2 < v.len()
            && let (Some(h), Some(l)) = (hexval(v[i + 1]), hexval(v[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// The normalised URI Suricata's `http.uri` shows: path and query only, percent-decoded,
/// with `.` and `..` segments removed.
pub fn normalize_uri(uri: &[u8]) -> Vec<u8> {
    let mut u = uri;
    if let Some(i) = memchr::memmem::find(u, b"://")
        && u[..i].iter().all(|b| b.is_ascii_alphanumeric())
    {
        let rest = &u[i + 3..];
        u = match rest.iter().position(|b| *b == b'/') {
            Some(p) => &rest[p..],
            None => b"/",
        };
    }
    let (path, query) = match u.iter().position(|b| *b == b'?') {
        Some(q) => (&u[..q], Some(&u[q + 1..])),
        None => (u, None),
    };
    let path = percent_decode(path);
    let mut segs: Vec<&[u8]> = vec![];
    let absolute = path.starts_with(b"/");
    let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, s) in parts.iter().enumerate() {
        match *s {
            b"." => {
                if i == last {
                    segs.push(b"");
                }
            }
            b".." => {
                if segs.len() > 1 || (segs.len() == 1 && !absolute) {
                    segs.pop();
                }
                if i == last {
                    segs.push(b"");
                }
            }
            _ => segs.push(s),
        }
    }
    let mut out = segs.join(&b'/');
    if absolute && !out.starts_with(b"/") {
        out.insert(0, b'/');
    }
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(&percent_decode(q));
    }
    out
}

/// Decompress a response body by its Content-Encoding, leniently: what a client would still
/// decode from a damaged stream is kept; a body that does not decode at all is returned as is.
fn decode_body(headers: &[(Vec<u8>, Vec<u8>)], body: &[u8], cfg: &HttpConfig) -> Vec<u8> {
    let ce: Vec<u8> = header_all(headers, "content-encoding")
        .to_ascii_lowercase()
        .into_iter()
        .filter(|b| *b != 0)
        .collect();
    // As libhtp: tokens that contain "gzip" or "deflate", whatever bytes surround them.
    let layers: Vec<&[u8]> = ce
        .split(|b| matches!(b, b',' | b' ' | b';'))
        .filter(|t| contains_nocase(t, b"gzip") || contains_nocase(t, b"deflate"))
        .collect();
    if layers.is_empty() {
        return body.to_vec();
    }
    // The decoded body is kept up to `body_limit`, as Suricata keeps what libhtp decompressed
    // up to its response-body-limit: the last layer stops there.
    let mut data = body.to_vec();
    let count = layers.len().min(cfg.max_layers);
    for k in 0..count {
        let limit = if k + 1 == count {
            cfg.body_limit
        } else {
            cfg.decompress_limit
        };
        match inflate_lenient(&data, limit) {
            Some(d) if !d.is_empty() => data = d,
            _ => break,
        }
    }
    data.truncate(cfg.body_limit);
    data
}

/// gzip (with a damaged header tolerated), zlib or raw deflate, whichever yields most.
pub fn inflate_lenient(data: &[u8], limit: usize) -> Option<Vec<u8>> {
    // Candidate starts, most likely first; the first that decodes to its end wins, otherwise
    // the longest partial output.
    let mut tries: Vec<(&[u8], bool)> = vec![];
    if data.len() >= 10 && data[0] == 0x1f {
        // gzip: skip the header by its flags, whatever the method byte says.
        let flags = data[3];
        let mut p = 10usize;
        if flags & 0x04 != 0 && data.len() >= p + 2 {
            p += 2 + u16::from_le_bytes([data[p], data[p + 1]]) as usize;
        }
        for bit in [0x08u8, 0x10] {
            if flags & bit != 0 {
                while p < data.len() && data[p] != 0 {
                    p += 1;
                }
                p += 1;
            }
        }
        if flags & 0x02 != 0 {
            p += 2;
        }
        if p < data.len() {
            tries.push((&data[p..], false));
        }
        tries.push((&data[10..], false));
    }
    tries.push((data, true));
    tries.push((data, false));
    let mut best: Option<Vec<u8>> = None;
    for (input, zlib) in tries {
        let (out, complete) = inflate(input, zlib, limit);
        if complete && !out.is_empty() {
            return Some(out);
        }
        if best.as_ref().is_none_or(|b| out.len() > b.len()) {
            best = Some(out);
        }
    }
    best.filter(|b| !b.is_empty())
}

/// Decompress; returns the output and whether the stream ended properly (or hit the limit).
fn inflate(data: &[u8], zlib: bool, limit: usize) -> (Vec<u8>, bool) {
    // The decompressor's state (its 32 KiB window and tables) and the output chunk are made
    // once per thread: made and freed for each body, they were most of the page faults of a
    // replay with rules, the freed memory going back to the system and coming back faulted.
    thread_local! {
        static SCRATCH: std::cell::RefCell<Option<(flate2::Decompress, Vec<u8>)>> =
            const { std::cell::RefCell::new(None) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (d, chunk) =
            s.get_or_insert_with(|| (flate2::Decompress::new(zlib), vec![0u8; 32 << 10]));
        d.reset(zlib);
        inflate_with(d, chunk, data, limit)
    })
}

fn inflate_with(
    d: &mut flate2::Decompress,
    chunk: &mut [u8],
    data: &[u8],
    limit: usize,
) -> (Vec<u8>, bool) {
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).min(limit));
    let mut input = data;
    loop {
        let before_in = d.total_in();
        let before_out = d.total_out();
        let r = d.decompress(input, chunk, flate2::FlushDecompress::None);
        let used = (d.total_in() - before_in) as usize;
        let made = (d.total_out() - before_out) as usize;
        let room = limit.saturating_sub(out.len());
        let _ = out.write_all(&chunk[..made.min(room)]);
        input = &input[used.min(input.len())..];
        match r {
            Ok(flate2::Status::StreamEnd) => return (out, true),
            Err(_) => return (out, false),
            Ok(_) => {
                if out.len() >= limit {
                    return (out, true);
                }
                if used == 0 && made == 0 {
                    return (out, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conn: &mut HttpConn, req: &[u8], resp: &[u8]) -> Vec<HttpEvent> {
        let mut ev = conn.data(true, req);
        ev.extend(conn.data(false, resp));
        ev
    }

    #[test]
    fn request_response_with_length_and_chunked_bodies() {
        let mut c = HttpConn::new(HttpConfig::default());
        let ev = run(
            &mut c,
            b"GET /a/./b/../c%41?x=%41 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: t\r\n\r\nPOST /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Nope\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n 2;ext\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(
            ev,
            vec![
                HttpEvent::Request(0),
                HttpEvent::Request(1),
                HttpEvent::Response(0),
                HttpEvent::Response(1)
            ]
        );
        let t = c.tx(0).unwrap();
        assert_eq!(t.uri_norm, b"/a/cA?x=A");
        assert_eq!(t.host_norm, b"example.com");
        assert_eq!(
            t.buffer(Buffer::HttpUserAgent, Side::Request).as_slice(),
            [b"t".as_slice()]
        );
        assert_eq!(t.response_body, b"hello");
        let t = c.tx(1).unwrap();
        assert_eq!(t.request_body, b"body");
        assert_eq!(t.status, b"404");
        assert_eq!(t.status_msg, b"Nope");
        assert_eq!(t.response_body, b"abcde");
        assert_eq!(
            t.buffer(Buffer::HttpHeaderNames, Side::Response).as_slice(),
            [b"\r\nTransfer-Encoding\r\n\r\n".as_slice()]
        );
    }

    #[test]
    fn only_an_absolute_target_names_the_host() {
        for (target, host) in [
            ("http://abs.example:81/x", "abs.example"),
            ("/c.gif?tp=http://other.example/", "c.example"),
            ("//index.php?page=x", "c.example"),
            ("/plain", "c.example"),
        ] {
            let mut c = HttpConn::new(HttpConfig::default());
            let req = format!("GET {target} HTTP/1.1\r\nHost: C.example\r\n\r\n");
            assert_eq!(c.data(true, req.as_bytes()), vec![HttpEvent::Request(0)]);
            let t = c.tx(0).unwrap();
            assert_eq!(t.host_norm, host.as_bytes(), "{target}");
        }
    }

    #[test]
    fn folded_headers_bare_lf_and_body_to_close_in_pieces() {
        let mut c = HttpConn::new(HttpConfig::default());
        c.data(true, b"GET / HTTP/1.1\nHost: h\n\n");
        let resp =
            b"HTTP/1.1 200 ok\nTransfer-Encoding\r\n \r\n :\r\n chunked\nX: y\n\n4\nX5O!\n4\nP%@A\n0\n\n";
        let mut ev = vec![];
        for b in resp.chunks(3) {
            ev.extend(c.data(false, b));
        }
        assert_eq!(ev, vec![HttpEvent::Response(0)]);
        assert_eq!(c.tx(0).unwrap().response_body, b"X5O!P%@A");
        let mut c = HttpConn::new(HttpConfig::default());
        c.data(true, b"GET / HTTP/1.0\r\n\r\n");
        assert!(
            c.data(false, b"HTTP/1.0 200 OK\r\n\r\npart one ")
                .is_empty()
        );
        c.data(false, b"part two");
        assert_eq!(c.close(false), vec![HttpEvent::Response(0)]);
        assert_eq!(c.tx(0).unwrap().response_body, b"part one part two");
    }

    #[test]
    fn gzip_deflate_and_damaged_gzip_headers() {
        use flate2::Compression;
        use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
        let plain = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".repeat(3);
        let mut g = GzEncoder::new(vec![], Compression::default());
        g.write_all(&plain).unwrap();
        let mut gz = g.finish().unwrap();
        assert_eq!(inflate_lenient(&gz, 1 << 20).unwrap(), plain);
        gz[3] = 0x20; // a reserved flag set
        assert_eq!(inflate_lenient(&gz, 1 << 20).unwrap(), plain);
        let mut z = ZlibEncoder::new(vec![], Compression::default());
        z.write_all(&plain).unwrap();
        assert_eq!(
            inflate_lenient(&z.finish().unwrap(), 1 << 20).unwrap(),
            plain
        );
        let mut d = DeflateEncoder::new(vec![], Compression::default());
        d.write_all(&plain).unwrap();
        let raw = d.finish().unwrap();
        assert_eq!(inflate_lenient(&raw, 1 << 20).unwrap(), plain);
        // Truncated: what decodes is kept. A bomb stops at the limit.
        let mut x = 1u32;
        let noisy: Vec<u8> = (0..8000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b'a' + (x >> 24) as u8 % 16
            })
            .collect();
        let mut d = DeflateEncoder::new(vec![], Compression::default());
        d.write_all(&noisy).unwrap();
        let raw = d.finish().unwrap();
        let part = inflate_lenient(&raw[..raw.len() / 2], 1 << 20).unwrap();
        assert!(!part.is_empty() && noisy.starts_with(&part));
        let zeros = vec![0u8; 10 << 20];
        let mut d = DeflateEncoder::new(vec![], Compression::best());
        d.write_all(&zeros).unwrap();
        let bomb = d.finish().unwrap();
        assert_eq!(inflate_lenient(&bomb, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn bodies_are_kept_only_when_asked_and_their_length_counts_every_byte() {
        use flate2::Compression;
        use flate2::write::GzEncoder;
        let plain = b"hello hello hello hello".to_vec();
        let mut g = GzEncoder::new(vec![], Compression::default());
        g.write_all(&plain).unwrap();
        let gz = g.finish().unwrap();
        for (keep, limit) in [(true, 1 << 20), (true, 8), (false, 1 << 20)] {
            let mut c = HttpConn::new(HttpConfig {
                keep_bodies: keep,
                body_limit: limit,
                ..Default::default()
            });
            c.data(
                true,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
            );
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                gz.len()
            )
            .into_bytes();
            resp.extend_from_slice(&gz);
            // The response ends where the connection does.
            let mut ev = c.data(false, &resp);
            ev.extend(c.close(false));
            assert_eq!(ev, vec![HttpEvent::Response(0)]);
            let t = c.tx(0).unwrap();
            // Counted whole, whatever is kept.
            assert_eq!(t.response_body_len, gz.len() as u64);
            match (keep, limit) {
                (true, 8) => {
                    // Too little of the gzip stream to decode: kept as it came.
                    assert_eq!(t.response_body, gz[..8]);
                    assert_eq!(c.stats.truncated_bodies, 1);
                }
                (true, _) => {
                    assert_eq!(t.response_body, plain);
                    assert_eq!(t.request_body, b"body");
                }
                (false, _) => {
                    assert!(t.response_body.is_empty() && t.request_body.is_empty());
                    assert_eq!(c.stats.truncated_bodies, 0);
                }
            }
        }
    }

    #[test]
    fn decompressed_bodies_stop_at_the_body_limit_as_suricatas_do() {
        use flate2::Compression;
        use flate2::write::GzEncoder;
        // Suricata 7 raises a file.data alert on a pattern 50 KB into a gzip body that
        // decompresses to 170 KB, and none on one 150 KB in: it keeps 100 KB.
        let mut plain = vec![b'a'; 50_000];
        plain.extend_from_slice(b"NEAR");
        plain.resize(150_000, b'b');
        plain.extend_from_slice(b"FAR");
        plain.resize(170_000, b'c');
        let gzip = |data: &[u8]| {
            let mut g = GzEncoder::new(vec![], Compression::default());
            g.write_all(data).unwrap();
            g.finish().unwrap()
        };
        let once = gzip(&plain);
        let twice = gzip(&once);
        for (encoding, body) in [("gzip", &once), ("gzip, gzip", &twice)] {
            let mut c = HttpConn::new(HttpConfig::default());
            c.data(true, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            resp.extend_from_slice(body);
            let mut ev = c.data(false, &resp);
            ev.extend(c.close(false));
            assert_eq!(ev, vec![HttpEvent::Response(0)]);
            let t = c.tx(0).unwrap();
            assert_eq!(t.response_body, plain[..100 << 10], "{encoding}");
            assert!(contains_nocase(&t.response_body, b"NEAR"));
            assert!(!contains_nocase(&t.response_body, b"FAR"));
        }
    }

    #[test]
    fn limits_hold_on_garbage() {
        let mut c = HttpConn::new(HttpConfig {
            header_limit: 100,
            ..Default::default()
        });
        c.data(true, b"GET / HTTP/1.1\r\n");
        c.data(true, &[b'a'; 500]);
        assert_eq!(c.stats.failed, 1);
        assert!(c.req.buf.len() < 1000);
        let mut c = HttpConn::new(HttpConfig::default());
        for _ in 0..200 {
            c.data(true, b"GET / HTTP/1.1\r\n\r\n");
        }
        assert!(c.txs.len() <= 64);
        assert!(looks_like_request(b"GET / HTTP/1.1"));
        assert!(!looks_like_request(b"GETX"));
        assert!(looks_like_response(b"HTTP/1.1 200"));
    }
}
