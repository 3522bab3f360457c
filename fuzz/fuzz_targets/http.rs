//! The HTTP parser on arbitrary request and response streams, cut into arbitrary pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lindi_shared::detect::{Buffer, Side};
use lindi_shared::net::http::{HttpConfig, HttpConn, HttpEvent};

fuzz_target!(|data: &[u8]| {
    let mut c = HttpConn::new(HttpConfig {
        body_limit: 4096,
        decompress_limit: 65536,
        ..Default::default()
    });
    let mut events = vec![];
    // Each chunk: one byte of direction and length, then the bytes.
    let mut rest = data;
    while let Some((&h, tail)) = rest.split_first() {
        let n = ((h & 0x7f) as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        events.extend(c.data(h & 0x80 == 0, chunk));
        rest = next;
    }
    events.extend(c.close(true));
    events.extend(c.close(false));
    for e in events {
        let (id, side) = match e {
            HttpEvent::Request(id) => (id, Side::Request),
            HttpEvent::Response(id) => (id, Side::Response),
        };
        if let Some(tx) = c.tx(id) {
            for b in [
                Buffer::HttpUri,
                Buffer::HttpHeader,
                Buffer::FileData,
                Buffer::HttpHost,
            ] {
                let _ = tx.buffer(b, side);
            }
        }
    }
});
