//! One client connection: a read buffer, request-head parsing and response writing.

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::request::{from_parsed, HeadError, Request};
use super::response::{reason, Response, ResponseBody};
use super::sendfile::send_file;

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes.
    pub max_head_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// How long a client may take to send a complete head once it started.
    pub head_timeout: Duration,
    /// Longest pause allowed while a body is being received.
    pub body_timeout: Duration,
    /// Longest pause allowed while a client is not reading our response.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            idle_timeout: Duration::from_secs(75),
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum HeadFailure {
    /// The head is malformed: answer 400 and close.
    Malformed(&'static str),
    /// The head exceeds the size or header-count limit: answer 431 and close.
    TooLarge,
    /// `Transfer-Encoding` we do not implement: answer 501 and close.
    UnsupportedEncoding,
    /// The socket failed or the client was too slow: close without answering.
    Io(io::Error),
    /// The client opened with a TLS ClientHello on this plain-HTTP port (docker probes TLS
    /// first): close without answering, it cannot read HTTP.
    TlsHandshake,
}

/// Longest a lingering close keeps reading.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Most bytes a lingering close discards.
const LINGER_BYTES: usize = 256 * 1024 * 1024;

/// Longest single wait for the first byte of a request.
const IDLE_SLICE: Duration = Duration::from_millis(250);

/// What a response write sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Body bytes.
    pub bytes: u64,
    /// Whether the body went file → socket with sendfile(2).
    pub zero_copy: bool,
}

/// File bytes read per step when a blob goes out over TLS (no sendfile there).
const TLS_FILE_CHUNK: usize = 256 * 1024;

/// A client connection.
pub struct Conn {
    pub(crate) stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    pub(crate) limits: Limits,
    /// The TLS session, on a TLS listener (the socket is then non-blocking and driven with
    /// readiness waits and plain syscalls; see `tls.rs`).
    tls: Option<Box<rustls::ServerConnection>>,
    /// File bytes on their way into TLS records.
    file_buf: Vec<u8>,
    /// On a TLS connection: whether its first byte was looked at (plain HTTP gets a readable
    /// 400 instead of a TLS alert that curl reports as "HTTP/0.9").
    sniffed: bool,
}

impl Conn {
    /// Wrap an accepted stream. The socket becomes non-blocking for good: io_uring reads and
    /// writes on it still wait in the kernel (io_uring arms a poll), and `sendfile`/`send` can
    /// then be called directly without toggling the flag around every response (three `fcntl`
    /// per blob GET before).
    pub fn new(stream: TcpStream, limits: Limits) -> Conn {
        use std::os::fd::AsRawFd;
        let _ = stream.set_nodelay(true);
        let _ = super::tls::set_nonblocking(stream.as_raw_fd());
        Conn {
            stream,
            buf: Vec::with_capacity(limits.max_head_bytes.max(16 * 1024)),
            pos: 0,
            limits,
            tls: None,
            file_buf: Vec::new(),
            sniffed: false,
        }
    }

    /// A TLS connection whose client speaks plain HTTP (its first byte is a letter, where a
    /// TLS record starts with 0x16): answer, in plain text, that this port speaks TLS, as nginx
    /// does. `true` when it was answered (the connection is to be closed).
    fn plain_http_on_tls(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_raw_fd();
        let mut first = [0u8; 1];
        // SAFETY: peek one byte into a buffer we own, on a socket we own.
        let n = unsafe { libc::recv(fd, first.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n != 1 {
            return false;
        }
        self.sniffed = true;
        if !first[0].is_ascii_uppercase() {
            return false;
        }
        let body = "This port speaks TLS: use https:// (or the registry's plain-HTTP port).\n";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        // SAFETY: write bytes we own to a socket we own (non-blocking; a short write loses the
        // courtesy, not data).
        unsafe { libc::send(fd, answer.as_ptr().cast(), answer.len(), libc::MSG_NOSIGNAL) };
        true
    }

    /// Wrap an accepted stream that speaks TLS with `session`.
    pub fn new_tls(stream: TcpStream, limits: Limits, mut session: rustls::ServerConnection) -> io::Result<Conn> {
        // Fewer, larger writes of records to the socket.
        session.set_buffer_limit(Some(1 << 20));
        let mut c = Conn::new(stream, limits);
        c.tls = Some(Box::new(session));
        Ok(c)
    }

    /// The TLS session, when the connection is TLS.
    pub fn tls(&self) -> Option<&rustls::ServerConnection> {
        self.tls.as_deref()
    }

    /// Whether a TLS handshake is still going on.
    fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
        }
    }

    /// Read more bytes into the buffer; Ok(0) at end of stream.
    pub(crate) async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.pos > 0 && self.buf.len() == self.buf.capacity() {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pos = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "read buffer full"));
        }
        if self.tls.is_some() {
            return self.fill_tls(timeout).await;
        }
        self.wait_readable(timeout).await?;
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        res
    }

    /// `fill` on a TLS connection: plaintext rustls already has, else ciphertext from the
    /// socket (handshake records are answered on the way), within `timeout`.
    async fn fill_tls(&mut self, timeout: Duration) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_raw_fd();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // Plaintext rustls already decrypted: copied straight into the spare capacity.
            let tls = self.tls.as_mut().expect("TLS connection");
            let room = self.buf.capacity() - self.buf.len();
            let mut reader = tls.reader();
            match std::io::BufRead::fill_buf(&mut reader) {
                Ok([]) => return Ok(0), // close_notify
                Ok(chunk) => {
                    let n = chunk.len().min(room);
                    self.buf.extend_from_slice(&chunk[..n]);
                    std::io::BufRead::consume(&mut reader, n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: end of stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
            self.flush_tls().await?;
            if !self.sniffed && self.plain_http_on_tls() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP on the TLS port"));
            }
            // Try the socket first (the next request is often there already); wait for
            // readiness only when it is empty.
            let tls = self.tls.as_mut().expect("TLS connection");
            match tls.read_tls(&mut super::tls::Fd(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
                    }
                    self.wait_readable(left).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let tls = self.tls.as_mut().expect("TLS connection");
            if let Err(e) = tls.process_new_packets() {
                // Tell the peer why (an alert is queued), then fail.
                let _ = self.flush_tls().await;
                return Err(io::Error::other(format!("TLS: {e}")));
            }
        }
    }

    /// Write out every record rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.stream.as_raw_fd();
        while let Some(tls) = self.tls.as_mut().filter(|t| t.wants_write()) {
            match tls.write_tls(&mut super::tls::Fd(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match monoio::time::timeout(self.limits.write_timeout, self.stream.writable(false)).await {
                        Ok(r) => r?,
                        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Encrypt and send `data` (TLS connections).
    async fn write_tls_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        while !data.is_empty() {
            let n = self.tls.as_mut().expect("TLS connection").writer().write(data)?;
            data = &data[n..];
            self.flush_tls().await?;
        }
        Ok(())
    }

    /// `len` bytes of `file` from `offset`, encrypted (no sendfile over TLS): page cache →
    /// one buffer → records → socket.
    async fn send_file_tls(&mut self, file: &std::fs::File, mut offset: u64, len: u64) -> io::Result<u64> {
        use std::os::unix::fs::FileExt as _;
        let end = offset + len;
        let mut buf = std::mem::take(&mut self.file_buf);
        buf.resize(TLS_FILE_CHUNK, 0);
        let mut result = Ok(len);
        while offset < end {
            let want = ((end - offset) as usize).min(TLS_FILE_CHUNK);
            let n = match file.read_at(&mut buf[..want], offset) {
                Ok(0) => {
                    result = Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected"));
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if let Err(e) = self.write_tls_all(&buf[..n]).await {
                result = Err(e);
                break;
            }
            offset += n as u64;
        }
        self.file_buf = buf;
        result
    }

    /// Wait until the socket has data (or EOF), at most `timeout`.
    ///
    /// Timeouts wrap this readiness wait, never a read: dropping an io_uring read that the
    /// kernel already completed would lose the bytes it read (a request arriving just as an
    /// idle wait expires). Dropping a poll loses nothing.
    pub(crate) async fn wait_readable(&self, timeout: Duration) -> io::Result<()> {
        match monoio::time::timeout(timeout, self.stream.readable(false)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
        }
    }

    /// Read the next request head. `Ok(None)` when the client closed the connection (or went
    /// idle past the idle timeout) between requests.
    /// `stop` is polled while the connection is idle so shutdown does not wait for idle clients.
    pub async fn read_head(&mut self, stop: &dyn Fn() -> bool) -> Result<Option<Request>, HeadFailure> {
        let idle_since = std::time::Instant::now();
        // The whole head must arrive within `head_timeout` of its first byte (a client sending
        // one byte every few seconds is cut off, not kept forever).
        let mut head_started: Option<std::time::Instant> = None;
        loop {
            // Tolerate stray CRLFs between pipelined requests (RFC 9112 2.2).
            let skip = self.buffered().iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
            if skip > 0 {
                self.consume(skip);
            }
            // A TLS record header (handshake, version 3.x) where a request line should be.
            if self.tls.is_none()
                && self.buffered().len() >= 2
                && self.buffered()[0] == 0x16
                && self.buffered()[1] == 0x03
            {
                return Err(HeadFailure::TlsHandshake);
            }
            if !self.buffered().is_empty() {
                let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(self.buffered()) {
                    Ok(httparse::Status::Complete(n)) => {
                        // Lines end with CRLF. A bare LF (which httparse tolerates) is refused:
                        // a proxy in front that splits lines differently could be smuggled past.
                        let head = &self.buffered()[..n];
                        if head.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r')) {
                            return Err(HeadFailure::Malformed(
                                "bare LF in the request head: lines must end with CRLF",
                            ));
                        }
                        let req = from_parsed(&parsed).map_err(|e| match e {
                            HeadError::Bad(m) => HeadFailure::Malformed(m),
                            HeadError::UnsupportedEncoding => HeadFailure::UnsupportedEncoding,
                        })?;
                        self.consume(n);
                        return Ok(Some(req));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buffered().len() >= self.limits.max_head_bytes {
                            return Err(HeadFailure::TooLarge);
                        }
                    }
                    Err(httparse::Error::TooManyHeaders) => return Err(HeadFailure::TooLarge),
                    Err(_) => return Err(HeadFailure::Malformed("malformed request head")),
                }
            }
            // A TLS handshake in progress counts as a head being sent (its deadline applies).
            let idle = self.buffered().is_empty() && !self.handshaking();
            // Idle waits are sliced so a shutdown is noticed within a quarter second.
            let timeout = if idle {
                IDLE_SLICE.min(self.limits.idle_timeout)
            } else {
                let started = *head_started.get_or_insert_with(std::time::Instant::now);
                let left = self.limits.head_timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(HeadFailure::Io(io::Error::new(io::ErrorKind::TimedOut, "request head too slow")));
                }
                left
            };
            match self.fill(timeout).await {
                Ok(0) if idle => return Ok(None),
                Ok(0) => return Err(HeadFailure::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if idle && e.kind() == io::ErrorKind::TimedOut => {
                    if stop() || idle_since.elapsed() >= self.limits.idle_timeout {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(HeadFailure::TooLarge),
                Err(e) => return Err(HeadFailure::Io(e)),
            }
        }
    }

    /// Lingering close after an early answer (e.g. 507 or 413 while the client is still sending
    /// its body): stop writing, then read and discard what the client sends for a bounded time,
    /// so closing does not reset the connection and destroy the answer before the client reads
    /// it (as nginx's `lingering_close`).
    pub async fn linger(&mut self) {
        self.linger_for(LINGER_TIME, LINGER_BYTES).await
    }

    /// `linger` with its own bounds (short for callers refused before authentication: they
    /// get no more of our time than it takes to deliver the answer).
    pub async fn linger_for(&mut self, time: Duration, bytes: usize) {
        use std::os::fd::AsRawFd;
        if let Some(t) = self.tls.as_mut() {
            t.send_close_notify();
            let _ = self.flush_tls().await;
        }
        // SAFETY: half-closing our own socket; the descriptor stays open until drop.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR) };
        let deadline = std::time::Instant::now() + time;
        let mut discarded = 0usize;
        while std::time::Instant::now() < deadline && discarded < bytes {
            self.pos = 0;
            self.buf.clear();
            match self.fill(Duration::from_millis(500)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }

    /// Write raw bytes (interim responses).
    pub(crate) async fn write_all(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        if self.tls.is_some() {
            return self.write_tls_all(&bytes).await;
        }
        match monoio::time::timeout(self.limits.write_timeout, self.stream.write_all(bytes)).await {
            Ok((res, _)) => res.map(|_| ()),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }

    /// Write a response. With `head_only` (HEAD requests) the body is described by
    /// `Content-Length` but not sent. Returns the body bytes sent.
    pub async fn write_response(&mut self, resp: Response, head_only: bool, keep_alive: bool) -> io::Result<Sent> {
        let mut head = Vec::with_capacity(512);
        let status = resp.status;
        head.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", status, reason(status)).as_bytes());
        let mut has_len = false;
        for (n, v) in &resp.headers {
            if n.eq_ignore_ascii_case("content-length") {
                has_len = true;
            }
            head.extend_from_slice(n.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(v.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if !has_len && status != 204 && status >= 200 {
            head.extend_from_slice(format!("Content-Length: {}\r\n", resp.body_len()).as_bytes());
        }
        if !keep_alive {
            head.extend_from_slice(b"Connection: close\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let memory = |bytes| Sent { bytes, zero_copy: false };
        if head_only || status == 204 {
            self.write_all(head).await?;
            return Ok(memory(0));
        }
        match resp.body {
            ResponseBody::Empty => {
                self.write_all(head).await?;
                Ok(memory(0))
            }
            ResponseBody::Shared { bytes, offset, len } => {
                head.extend_from_slice(&bytes[offset as usize..(offset + len) as usize]);
                self.write_all(head).await?;
                Ok(memory(u64::from(len)))
            }
            ResponseBody::Bytes(b) => {
                let n = b.len() as u64;
                head.extend_from_slice(&b);
                self.write_all(head).await?;
                Ok(memory(n))
            }
            ResponseBody::File { file, offset, len } if self.tls.is_some() => {
                self.write_all(head).await?;
                let bytes = self.send_file_tls(&file, offset, len).await?;
                Ok(Sent { bytes, zero_copy: false })
            }
            ResponseBody::File { file, offset, len } => {
                let bytes = send_file(&self.stream, &head, &file, offset, len, self.limits.write_timeout).await?;
                Ok(Sent { bytes, zero_copy: true })
            }
            ResponseBody::Fill { fill, offset, len } => {
                self.write_all(head).await?;
                let end = offset + len;
                let mut at = offset;
                while at < end {
                    // The fetch has its own read timeout: a stalled S3 fails it, and us here.
                    let avail = fill.available(at).await.map_err(io::Error::other)?.min(end);
                    at += if self.tls.is_some() {
                        self.send_file_tls(fill.file(), at, avail - at).await?
                    } else {
                        send_file(&self.stream, &[], fill.file(), at, avail - at, self.limits.write_timeout).await?
                    };
                }
                Ok(Sent { bytes: len, zero_copy: self.tls.is_none() })
            }
            ResponseBody::Stream(mut s) => {
                self.write_all(head).await?;
                let mut sent = 0u64;
                while sent < s.len {
                    let Some(chunk) = s.chunks.recv().await else { break };
                    let chunk = chunk.map_err(io::Error::other)?;
                    sent += chunk.len() as u64;
                    if self.tls.is_some() {
                        self.write_tls_all(&chunk).await?;
                        continue;
                    }
                    match monoio::time::timeout(self.limits.write_timeout, self.stream.write_all(chunk)).await {
                        Ok((res, _)) => res?,
                        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
                    };
                }
                if sent != s.len {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "S3 stream ended early"));
                }
                Ok(Sent { bytes: sent, zero_copy: false })
            }
        }
    }
}
