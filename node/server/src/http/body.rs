//! Streaming request bodies: Content-Length or chunked, read straight into the caller's buffer.

use std::io;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::conn::Conn;
use super::request::{Framing, Request};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The socket failed, timed out, or closed early.
    #[error("body read failed: {0}")]
    Io(#[from] io::Error),
    /// Chunked framing is malformed.
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    /// Larger than the caller's limit.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
    /// A read failed (framing error, timeout, disconnect): the rest of the body is unusable.
    Broken,
}

/// The body of the current request. Dropping it unread is allowed: the connection loop then
/// drains or closes.
pub struct Body<'c> {
    conn: &'c mut Conn,
    state: State,
    continue_pending: bool,
    received: u64,
}

const MAX_LINE: usize = 4096;

impl<'c> Body<'c> {
    /// The body of `req`, read from `conn`.
    pub fn new(conn: &'c mut Conn, req: &Request) -> Body<'c> {
        let state = match req.framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        Body { conn, continue_pending: req.expect_continue && state != State::Done, state, received: 0 }
    }

    /// Whether the whole body has been consumed.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the client is still waiting for `100 Continue` (nothing was read yet).
    pub fn awaiting_continue(&self) -> bool {
        self.continue_pending
    }

    /// Bytes of body received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Declared length, when the body is not chunked.
    pub fn declared_len(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n + self.received),
            State::Done => Some(self.received),
            _ => None,
        }
    }

    async fn send_continue(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            self.conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()).await?;
        }
        Ok(())
    }

    /// Read the next piece of the body into `buf` (cleared first; at most its capacity).
    /// Returns 0 at the end of the body.
    pub async fn read(&mut self, mut buf: Vec<u8>) -> (Result<usize, BodyError>, Vec<u8>) {
        buf.clear();
        self.append(buf).await
    }

    /// Like [`Body::read`], but appends to what `buf` holds.
    async fn append(&mut self, buf: Vec<u8>) -> (Result<usize, BodyError>, Vec<u8>) {
        if self.state == State::Broken {
            return (Err(BodyError::Malformed("body already failed")), buf);
        }
        let (r, buf) = self.read_inner(buf).await;
        if r.is_err() {
            self.state = State::Broken;
        }
        (r, buf)
    }

    /// Fill `buf` to its capacity, across chunk boundaries of a chunked body, stopping early
    /// only at the end of the body: a client that streams many small chunks (the Docker daemon
    /// writes 32 KiB ones) then costs one file write per buffer, not several per chunk. On an
    /// error the bytes read before it are in `buf` (the caller keeps them: a broken upload is
    /// resumable from what arrived).
    pub async fn read_full(&mut self, mut buf: Vec<u8>) -> (Result<usize, BodyError>, Vec<u8>) {
        buf.clear();
        while buf.len() < buf.capacity() {
            let (r, b) = self.append(buf).await;
            buf = b;
            match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        let n = buf.len();
        (Ok(n), buf)
    }

    /// Append the next piece of the body to `buf` (at most its spare capacity).
    async fn read_inner(&mut self, buf: Vec<u8>) -> (Result<usize, BodyError>, Vec<u8>) {
        if let Err(e) = self.send_continue().await {
            return (Err(e.into()), buf);
        }
        loop {
            match self.state {
                State::Done => return (Ok(0), buf),
                State::Broken => return (Err(BodyError::Malformed("body already failed")), buf),
                State::Length(rem) => {
                    let (r, buf) = self.read_data(buf, rem).await;
                    return match r {
                        Ok(0) => (Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()), buf),
                        Ok(n) => {
                            self.state = if rem == n as u64 { State::Done } else { State::Length(rem - n as u64) };
                            (Ok(n), buf)
                        }
                        Err(e) => (Err(e.into()), buf),
                    };
                }
                State::ChunkSize => {
                    let line = match self.line().await {
                        Ok(l) => l,
                        Err(e) => return (Err(e), buf),
                    };
                    let size = line.split(';').next().unwrap_or("").trim();
                    if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return (Err(BodyError::Malformed("bad chunk size")), buf);
                    }
                    let n = u64::from_str_radix(size, 16).unwrap_or(0);
                    self.state = if n == 0 { State::Trailers } else { State::ChunkData(n) };
                }
                State::ChunkData(rem) => {
                    let (r, buf) = self.read_data(buf, rem).await;
                    return match r {
                        Ok(0) => (Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()), buf),
                        Ok(n) => {
                            self.state =
                                if rem == n as u64 { State::ChunkEnd } else { State::ChunkData(rem - n as u64) };
                            (Ok(n), buf)
                        }
                        Err(e) => (Err(e.into()), buf),
                    };
                }
                State::ChunkEnd => match self.line().await {
                    Ok(l) if l.is_empty() => self.state = State::ChunkSize,
                    Ok(_) => return (Err(BodyError::Malformed("chunk not followed by CRLF")), buf),
                    Err(e) => return (Err(e), buf),
                },
                State::Trailers => match self.line().await {
                    Ok(l) if l.is_empty() => self.state = State::Done,
                    Ok(_) => {}
                    Err(e) => return (Err(e), buf),
                },
            }
        }
    }

    /// Read one CRLF-terminated line from the connection (without the CRLF).
    async fn line(&mut self) -> Result<String, BodyError> {
        loop {
            if let Some(pos) = self.conn.buffered().windows(2).position(|w| w == b"\r\n") {
                let line = std::str::from_utf8(&self.conn.buffered()[..pos])
                    .map_err(|_| BodyError::Malformed("non-UTF-8 chunk line"))?
                    .to_owned();
                self.conn.consume(pos + 2);
                return Ok(line);
            }
            if self.conn.buffered().len() > MAX_LINE {
                return Err(BodyError::Malformed("chunk line too long"));
            }
            let timeout = self.conn.limits.body_timeout;
            if self.conn.fill(timeout).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Up to `limit` body bytes appended to `buf` (within its capacity): buffered bytes first,
    /// then straight from the socket.
    async fn read_data(&mut self, mut buf: Vec<u8>, limit: u64) -> (io::Result<usize>, Vec<u8>) {
        let start = buf.len();
        let cap = (buf.capacity() - start).min(limit.min(usize::MAX as u64) as usize);
        let avail = self.conn.buffered().len();
        if avail > 0 {
            let n = avail.min(cap);
            buf.extend_from_slice(&self.conn.buffered()[..n]);
            self.conn.consume(n);
            self.received += n as u64;
            return (Ok(n), buf);
        }
        let timeout = self.conn.limits.body_timeout;
        if self.conn.tls().is_some() {
            // Plaintext comes out of the TLS session: through the connection's buffer.
            return match self.conn.fill(timeout).await {
                Ok(0) => (Ok(0), buf),
                Ok(_) => {
                    let n = self.conn.buffered().len().min(cap);
                    buf.extend_from_slice(&self.conn.buffered()[..n]);
                    self.conn.consume(n);
                    self.received += n as u64;
                    (Ok(n), buf)
                }
                Err(e) => (Err(e), buf),
            };
        }
        if let Err(e) = self.conn.wait_readable(timeout).await {
            return (Err(e), buf);
        }
        let (r, slice) = self.conn.stream.read(buf.slice_mut(start..start + cap)).await;
        let buf = slice.into_inner();
        if let Ok(n) = r {
            self.received += n as u64;
        }
        (r, buf)
    }

    /// Read the whole body into memory, failing with [`BodyError::TooLarge`] past `limit` bytes.
    pub async fn read_to_end(&mut self, limit: u64) -> Result<Vec<u8>, BodyError> {
        if let State::Length(n) = self.state {
            if n > limit {
                return Err(BodyError::TooLarge(limit));
            }
        }
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let (r, b) = self.read(buf).await;
            buf = b;
            let n = r?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() as u64 + n as u64 > limit {
                return Err(BodyError::TooLarge(limit));
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Consume and discard up to `max` remaining bytes so the connection can be reused.
    /// Returns whether the body is now complete.
    pub async fn drain(&mut self, max: u64) -> bool {
        if self.continue_pending || self.state == State::Broken {
            // The client has not sent the body (it will not, once it sees our final answer),
            // or the body's framing is already lost.
            return false;
        }
        let mut seen = 0u64;
        let mut buf = Vec::with_capacity(64 * 1024);
        while !self.is_complete() && seen <= max {
            let (r, b) = self.read(buf).await;
            buf = b;
            match r {
                Ok(0) => break,
                Ok(n) => seen += n as u64,
                Err(_) => return false,
            }
        }
        self.is_complete()
    }
}
