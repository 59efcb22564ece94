//! Zero-copy file → socket transfer with `sendfile(2)`.
//!
//! monoio's own splice support takes no file offset, so we call `sendfile` directly: the socket
//! is switched to non-blocking for the transfer, and on `EAGAIN` we wait for writability with an
//! io_uring poll (or epoll in the fallback driver) before continuing. The core never blocks on a
//! slow reader; bytes go from the page cache to the socket without a user-space copy.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

/// Restores the socket's original flags when dropped.
struct NonBlocking {
    fd: i32,
    flags: i32,
}

impl NonBlocking {
    fn set(fd: i32) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on a descriptor we own through `stream` for the guard's lifetime.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(NonBlocking { fd, flags })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if self.flags & libc::O_NONBLOCK == 0 {
            // SAFETY: restoring the flags read in `set` on the same descriptor.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
        }
    }
}

/// Send `len` bytes of `file` from `offset` to `stream`. `stall` bounds how long the peer may
/// refuse to take bytes before the transfer fails with `TimedOut`.
pub(crate) async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    mut offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<u64> {
    let sock = stream.as_raw_fd();
    let _guard = NonBlocking::set(sock)?;
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
            Some(libc::EAGAIN) => match monoio::time::timeout(stall, stream.writable(false)).await {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")),
            },
            Some(libc::EINTR) => {}
            _ => return Err(err),
        }
    }
    Ok(sent)
}
