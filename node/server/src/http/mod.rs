//! HTTP/1.1 on a monoio `TcpStream`: request heads parsed with `httparse`, bodies streamed
//! (Content-Length or chunked), responses written from memory or from a file with
//! `sendfile(2)` so blob bytes never pass through user space.
//!
//! The connection loop is ours (not hyper's) because the blob body path must be zero-copy:
//! no body abstraction of an HTTP library hands us the socket. See docs/ARCHITECTURE.md.

mod body;
mod conn;
mod request;
mod response;
mod sendfile;
pub mod tls;

pub use body::{Body, BodyError};
pub use conn::{Conn, HeadFailure, Limits, Sent};
pub use request::{Framing, Method, Request};
pub use response::{Response, ResponseBody};
