//! Zero-copy file → socket transfer with `sendfile(2)`.
//!
//! monoio's own splice support takes no file offset, so we call `sendfile` directly on the
//! connection's non-blocking socket, and on `EAGAIN` we wait for writability with an io_uring
//! poll (or epoll in the fallback driver) before continuing. The core never blocks on a
//! slow reader; bytes go from the page cache to the socket without a user-space copy.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

/// Wait until the socket takes bytes again, at most `stall`.
async fn writable(stream: &TcpStream, stall: Duration) -> io::Result<()> {
    match monoio::time::timeout(stall, stream.writable(false)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")),
    }
}

/// Send the response `head`, then `len` bytes of `file` from `offset`, to `stream`. `stall`
/// bounds how long the peer may refuse to take bytes before the transfer fails with
/// `TimedOut`. Returns the file bytes sent.
///
/// The head goes out with `MSG_MORE`: the kernel holds it until the file's first bytes join
/// it, so a small blob leaves as one segment instead of a head segment and a body segment (the
/// socket has `TCP_NODELAY`), and the head costs a plain `send` on the already non-blocking
/// socket rather than an io_uring write of its own.
pub(crate) async fn send_file(
    stream: &TcpStream,
    head: &[u8],
    file: &std::fs::File,
    mut offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<u64> {
    // The socket is non-blocking (`Conn::new`): EAGAIN means wait for writability.
    let sock = stream.as_raw_fd();
    let mut at = 0;
    while at < head.len() {
        let flags = libc::MSG_NOSIGNAL | if len > 0 { libc::MSG_MORE } else { 0 };
        // SAFETY: the pointer and length describe the live slice `head[at..]`.
        let n = unsafe { libc::send(sock, head[at..].as_ptr().cast(), head.len() - at, flags) };
        if n >= 0 {
            at += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => writable(stream, stall).await?,
            Some(libc::EINTR) => {}
            _ => return Err(err),
        }
    }
    let end = offset + len;
    let mut sent = 0u64;
    while offset < end {
        let chunk = (end - offset).min(1 << 30) as usize;
        let mut off = offset as libc::off_t;
        // SAFETY: both descriptors are open for the duration of the call; `off` is a valid
        // pointer to a local.
        let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, chunk) };
        if n > 0 {
            offset += n as u64;
            sent += n as u64;
            continue;
        }
        if n == 0 {
            // The file is shorter than its index entry says: never pad, fail the response.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than expected"));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => writable(stream, stall).await?,
            Some(libc::EINTR) => {}
            _ => return Err(err),
        }
    }
    Ok(sent)
}
