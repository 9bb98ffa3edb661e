//! A lean blocking HTTP/1.1 client: one keep-alive connection per client, read and written
//! with plain blocking socket calls on the calling thread, so each load-generating client is
//! one OS thread and its timings include no cross-thread hand-off. Responses are parsed with
//! `httparse` (hyper's parser); bodies are read by `Content-Length`, chunked, or to the end.
//!
//! Blocking calls rather than an async runtime per client: an answer costs a `write` and a
//! `read` or two, where a runtime added a readiness wait (`epoll_wait`) and a read that
//! found nothing per answer. The clients share the two cores with the service they measure
//! (BENCHMARKS.md).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One answer, fully read.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// From just before the request was written to the last body byte.
    pub elapsed: Duration,
}

impl Answer {
    /// The body as text (lossy), cut to `max` bytes, for error messages.
    pub fn snippet(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match text.char_indices().nth(max) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.into_owned(),
        }
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("answer is not JSON ({e}): {}", self.snippet(200)))
    }
}

/// Whose event stream is being read: the service's (`event: chunk` relays each upstream chunk)
/// or the upstream's own (`data: {...}` per chunk, then `data: [DONE]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Service,
    Upstream,
}

/// A streamed answer with the arrival time of every chunk event.
#[derive(Debug, Default)]
pub struct StreamAnswer {
    pub status: u16,
    /// Arrival of each chunk event, measured from just before the request was written.
    pub chunk_times: Vec<Duration>,
    /// The stream ended as it should: `turn.completed` (service) or `data: [DONE]` (upstream).
    pub completed: bool,
    /// `turn.failed` data, or the body of a non-200 answer.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

pub struct Client {
    addr: SocketAddr,
    host: String,
    connection: Option<Connection>,
    timeout: Duration,
}

impl Client {
    /// A client of `addr`; connects lazily (and again after a connection failed).
    pub fn new(addr: SocketAddr, timeout: Duration) -> Result<Client, String> {
        Ok(Client {
            addr,
            host: addr.to_string(),
            connection: None,
            timeout,
        })
    }

    pub fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.send("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Result<Answer, String> {
        self.send("POST", path, Some(body.into()))
    }

    fn send(&mut self, method: &str, path: &str, body: Option<Bytes>) -> Result<Answer, String> {
        let mut collected = Vec::new();
        let (status, elapsed) = self.exchange(method, path, body, &mut |data, _| {
            collected.extend_from_slice(data);
        })?;
        Ok(Answer {
            status,
            body: Bytes::from(collected),
            elapsed,
        })
    }

    /// POSTs `body` and reads the answer as an event stream, timing each chunk event.
    pub fn stream(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        dialect: Dialect,
    ) -> Result<StreamAnswer, String> {
        let mut answer = StreamAnswer::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut raw: Vec<u8> = Vec::new();
        let (code, elapsed) = self.exchange("POST", path, Some(body.into()), &mut |data,
                                                                                    (
            code,
            arrived,
        )| {
            if code != 200 {
                raw.extend_from_slice(data);
                return;
            }
            pending.extend_from_slice(data);
            while let Some(end) = find(&pending, b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                classify(&event, dialect, arrived, &mut answer);
            }
        })?;
        answer.status = code;
        if code != 200 {
            answer.failure = Some(String::from_utf8_lossy(&raw).into_owned());
        }
        answer.elapsed = elapsed;
        Ok(answer)
    }

    /// Writes one request and reads its answer whole, handing each piece of the body to
    /// `body` as it arrives, with the status and the time since the request was written.
    /// Returns the status and the time to the last body byte. A connection kept from an
    /// earlier answer is checked first and replaced if the other side closed it; a request
    /// is sent once (a connection that fails after it was written may have delivered it).
    /// After a failure the connection is dropped (its state is unknown).
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        on_body: &mut OnBody,
    ) -> Result<(u16, Duration), String> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(body) = &body {
            request.push_str("Content-Type: application/json\r\n");
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        if let Some(body) = &body {
            bytes.extend_from_slice(body);
        }
        let deadline = Instant::now() + self.timeout;
        if self.connection.as_ref().is_some_and(|c| !c.is_open()) {
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(connection) => connection,
            slot => {
                slot.insert(Connection::open(self.addr, deadline).map_err(|f| f.say(self.timeout))?)
            }
        };
        let start = Instant::now();
        match connection.exchange(&bytes, deadline, start, on_body) {
            Ok((status, keep)) => {
                let elapsed = start.elapsed();
                if !keep {
                    self.connection = None;
                }
                Ok((status, elapsed))
            }
            Err(failure) => {
                self.connection = None;
                Err(failure.say(self.timeout))
            }
        }
    }
}

/// Takes each piece of an answer's body as it arrives, with the answer's status and the time
/// since its request was written.
type OnBody<'a> = dyn FnMut(&[u8], (u16, Duration)) + 'a;

/// Why an exchange failed.
enum Failure {
    /// The connection was closed (or reset) before any byte of the answer arrived.
    ClosedBeforeAnswer,
    TimedOut,
    Other(String),
}

impl Failure {
    fn say(self, timeout: Duration) -> String {
        match self {
            Failure::ClosedBeforeAnswer => "the connection closed before an answer".into(),
            Failure::TimedOut => format!("no complete answer within {timeout:?}"),
            Failure::Other(message) => message,
        }
    }
}

/// One keep-alive connection and what was read from it beyond the last answer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// `buffer[read..filled]` is read from the socket and not yet consumed.
    read: usize,
    filled: usize,
}

const READ_SIZE: usize = 64 << 10;

impl Connection {
    fn open(addr: SocketAddr, deadline: Instant) -> Result<Connection, Failure> {
        let stream =
            TcpStream::connect_timeout(&addr, remaining(deadline)?).map_err(|e| {
                match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::TimedOut,
                    _ => Failure::Other(format!("cannot connect to {addr}: {e}")),
                }
            })?;
        stream
            .set_nodelay(true)
            .map_err(|e| Failure::Other(format!("set_nodelay: {e}")))?;
        Ok(Connection {
            stream,
            buffer: vec![0; READ_SIZE],
            read: 0,
            filled: 0,
        })
    }

    /// Whether a kept connection can carry a request: the other side has not closed it,
    /// and it holds no bytes beyond the last answer. One non-blocking peek.
    fn is_open(&self) -> bool {
        if self.read != self.filled {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local buffer on this connection's own socket.
        let peeked = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        peeked < 0 && std::io::Error::last_os_error().kind() == ErrorKind::WouldBlock
    }

    /// Returns the status and whether the connection can carry another request.
    fn exchange(
        &mut self,
        request: &[u8],
        deadline: Instant,
        start: Instant,
        on_body: &mut OnBody,
    ) -> Result<(u16, bool), Failure> {
        self.stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(|e| Failure::Other(format!("set_write_timeout: {e}")))?;
        if let Err(e) = self.stream.write_all(request) {
            return Err(match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::TimedOut,
                _ => Failure::Other(format!("writing the request failed: {e}")),
            });
        }
        // The head.
        let (status, framing, keep) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buffer[self.read..self.filled]) {
                Ok(httparse::Status::Complete(length)) => {
                    let status = response.code.unwrap_or(0);
                    let (framing, keep) = framing_of(&response)?;
                    self.read += length;
                    break (status, framing, keep);
                }
                Ok(httparse::Status::Partial) => {
                    let got_any = self.filled > self.read;
                    if self.fill(deadline)? == 0 {
                        return Err(if got_any {
                            Failure::Other("the connection closed inside the answer's head".into())
                        } else {
                            Failure::ClosedBeforeAnswer
                        });
                    }
                }
                Err(e) => return Err(Failure::Other(format!("bad answer head: {e}"))),
            }
        };
        let mut deliver = |data: &[u8]| on_body(data, (status, start.elapsed()));
        let keep = match framing {
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.read == self.filled && self.fill(deadline)? == 0 {
                        return Err(Failure::Other("the connection closed inside a body".into()));
                    }
                    let take = left.min(self.filled - self.read);
                    deliver(&self.buffer[self.read..self.read + take]);
                    self.read += take;
                    left -= take;
                }
                keep
            }
            Framing::Chunked => {
                self.chunks(deadline, &mut deliver)?;
                keep
            }
            Framing::ToEnd => {
                loop {
                    if self.read < self.filled {
                        deliver(&self.buffer[self.read..self.filled]);
                        self.read = self.filled;
                    }
                    if self.fill(deadline)? == 0 {
                        break;
                    }
                }
                false
            }
        };
        if !keep {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        Ok((status, keep))
    }

    /// Reads a chunked body to its end (the last chunk and the trailers).
    fn chunks(&mut self, deadline: Instant, deliver: &mut dyn FnMut(&[u8])) -> Result<(), Failure> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buffer[self.read..self.filled]) {
                    Ok(httparse::Status::Complete((length, size))) => {
                        self.read += length;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.fill_more(deadline)?,
                    Err(_) => return Err(Failure::Other("bad chunk size".into())),
                }
            };
            if size == 0 {
                // Trailers (none expected), up to the blank line.
                loop {
                    match find(&self.buffer[self.read..self.filled], b"\r\n") {
                        Some(0) => {
                            self.read += 2;
                            return Ok(());
                        }
                        Some(end) => self.read += end + 2,
                        None => self.fill_more(deadline)?,
                    }
                }
            }
            let mut left = usize::try_from(size)
                .map_err(|_| Failure::Other(format!("chunk too large: {size}")))?;
            while left > 0 {
                if self.read == self.filled {
                    self.fill_more(deadline)?;
                }
                let take = left.min(self.filled - self.read);
                deliver(&self.buffer[self.read..self.read + take]);
                self.read += take;
                left -= take;
            }
            while self.filled - self.read < 2 {
                self.fill_more(deadline)?;
            }
            if &self.buffer[self.read..self.read + 2] != b"\r\n" {
                return Err(Failure::Other("a chunk does not end with CRLF".into()));
            }
            self.read += 2;
        }
    }

    /// `fill`, where the end of the connection is an error (the body is not complete).
    fn fill_more(&mut self, deadline: Instant) -> Result<(), Failure> {
        match self.fill(deadline)? {
            0 => Err(Failure::Other(
                "the connection closed inside a chunked body".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Reads what the socket has (waiting for it until `deadline`) after the unread bytes;
    /// returns how many bytes came (0: the connection was closed).
    fn fill(&mut self, deadline: Instant) -> Result<usize, Failure> {
        if self.read == self.filled {
            self.read = 0;
            self.filled = 0;
        } else if self.filled == self.buffer.len() {
            if self.read > 0 {
                self.buffer.copy_within(self.read..self.filled, 0);
                self.filled -= self.read;
                self.read = 0;
            } else {
                let grown = self.buffer.len() * 2;
                self.buffer.resize(grown, 0);
            }
        }
        self.stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| Failure::Other(format!("set_read_timeout: {e}")))?;
        loop {
            match self.stream.read(&mut self.buffer[self.filled..]) {
                Ok(n) => {
                    self.filled += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Failure::TimedOut)
                }
                Err(e) => return Err(Failure::Other(format!("reading the answer failed: {e}"))),
            }
        }
    }
}

/// How an answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    /// By the end of the connection.
    ToEnd,
}

/// The body's framing and whether the connection stays open after this answer.
fn framing_of(response: &httparse::Response) -> Result<(Framing, bool), Failure> {
    let mut length = None;
    let mut chunked = false;
    let mut keep = response.version == Some(1);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| Failure::Other(format!("bad Content-Length: {value}")))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep = !value.eq_ignore_ascii_case("close");
        }
    }
    let status = response.code.unwrap_or(0);
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        keep = false;
        Framing::ToEnd
    };
    Ok((framing, keep))
}

/// Time left before `deadline` (never zero: a zero timeout means none to the socket).
fn remaining(deadline: Instant) -> Result<Duration, Failure> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(Failure::TimedOut),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sorts one SSE event (its text up to and including the blank line) into the answer.
fn classify(event: &[u8], dialect: Dialect, arrived: Duration, answer: &mut StreamAnswer) {
    let text = String::from_utf8_lossy(event);
    let mut name = None;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    match dialect {
        Dialect::Service => match name.as_deref() {
            Some("chunk") => answer.chunk_times.push(arrived),
            Some("turn.completed") => answer.completed = true,
            Some("turn.failed") => answer.failure = Some(data),
            _ => {}
        },
        Dialect::Upstream => {
            if data == "[DONE]" {
                answer.completed = true;
            } else if !data.is_empty() {
                answer.chunk_times.push(arrived);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on loopback that reads one request per answer in `answers` (each sent as the
    /// given pieces, a little apart) on the first connection, then, if `close_between`,
    /// closes it after the first answer and serves the rest on the next connection. Returns
    /// the requests it read.
    fn serve(
        answers: Vec<Vec<&'static [u8]>>,
        close_between: bool,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            let (mut socket, _) = listener.accept().unwrap();
            for (i, pieces) in answers.into_iter().enumerate() {
                if close_between && i == 1 {
                    drop(socket);
                    socket = listener.accept().unwrap().0;
                }
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                // Head, then the body by its Content-Length.
                while !request.ends_with(b"\r\n\r\n") {
                    socket.read_exact(&mut byte).unwrap();
                    request.push(byte[0]);
                }
                let head = String::from_utf8(request.clone()).unwrap();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                let mut body = vec![0u8; length];
                socket.read_exact(&mut body).unwrap();
                requests.push(head + &String::from_utf8(body).unwrap());
                for piece in pieces {
                    socket.write_all(piece).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            requests
        });
        (addr, server)
    }

    #[test]
    fn reads_answers_by_length_chunked_and_to_the_end_on_one_connection() {
        let (addr, server) = serve(
            vec![
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", b"llo"],
                vec![
                    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r",
                    b"\n1",
                    b"0;ext=1\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
                ],
                vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
                vec![
                    b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nthe end",
                    b" of it",
                ],
            ],
            false,
        );
        let mut client = Client::new(addr, Duration::from_secs(5)).unwrap();
        let first = client.post("/one", r#"{"a":1}"#).unwrap();
        assert_eq!((first.status, &first.body[..]), (200, &b"hello"[..]));
        let second = client.get("/two").unwrap();
        assert_eq!(second.status, 201);
        assert_eq!(&second.body[..], b"abc0123456789abcdef");
        let third = client.get("/three").unwrap();
        assert_eq!((third.status, third.body.len()), (204, 0));
        let fourth = client.get("/four").unwrap();
        assert_eq!(
            (fourth.status, &fourth.body[..]),
            (500, &b"the end of it"[..])
        );
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("POST /one HTTP/1.1\r\n"));
        assert!(requests[0].contains("Content-Length: 7\r\n"));
        assert!(requests[0].ends_with("\r\n\r\n{\"a\":1}"));
        assert!(requests[1].starts_with("GET /two HTTP/1.1\r\n"));
        assert!(
            client.connection.is_none(),
            "closed after Connection: close"
        );
    }

    #[test]
    fn a_kept_connection_found_closed_is_replaced_before_sending() {
        let (addr, server) = serve(
            vec![
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"],
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"],
            ],
            true,
        );
        let mut client = Client::new(addr, Duration::from_secs(5)).unwrap();
        assert_eq!(&client.get("/a").unwrap().body[..], b"a");
        // The server closed the first connection after its answer.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(&client.get("/b").unwrap().body[..], b"b");
        assert_eq!(server.join().unwrap().len(), 2);
    }

    // A connection that fails after the request was written may have delivered it: the
    // request is not sent again.
    #[test]
    fn a_request_is_not_sent_again_when_its_connection_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            drop(socket); // read, then gone without an answer
            listener.set_nonblocking(true).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            listener.accept().is_ok()
        });
        let mut client = Client::new(addr, Duration::from_secs(5)).unwrap();
        assert!(client.get("/once").is_err());
        assert!(
            !server.join().unwrap(),
            "the request was sent a second time"
        );
    }

    #[test]
    fn streams_are_timed_event_by_event_and_a_silent_server_times_out() {
        let (addr, server) = serve(
            vec![vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"f\r\ndata: {\"a\":1}\n\n\r\n",
                b"F\r\ndata: {\"b\":2}\n\n\r\n",
                b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
            ]],
            false,
        );
        let mut client = Client::new(addr, Duration::from_secs(5)).unwrap();
        let answer = client.stream("/s", "{}", Dialect::Upstream).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.chunk_times.len(), 2);
        assert!(answer.completed);
        assert!(answer.chunk_times[1] > answer.chunk_times[0]);
        server.join().unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut silent =
            Client::new(listener.local_addr().unwrap(), Duration::from_millis(200)).unwrap();
        let started = Instant::now();
        let error = silent.get("/never").unwrap_err();
        assert!(error.contains("no complete answer within"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn classifies_service_and_upstream_events() {
        let mut a = StreamAnswer::default();
        let t = Duration::from_millis(1);
        classify(
            b"event: turn.started\ndata: {}\n\n",
            Dialect::Service,
            t,
            &mut a,
        );
        classify(
            b"event: chunk\ndata: {\"a\":1}\n\n",
            Dialect::Service,
            t,
            &mut a,
        );
        classify(b":\n\n", Dialect::Service, t, &mut a);
        classify(
            b"event: turn.completed\ndata: {}\n\n",
            Dialect::Service,
            t,
            &mut a,
        );
        assert_eq!(a.chunk_times.len(), 1);
        assert!(a.completed);

        let mut b = StreamAnswer::default();
        classify(b": OPENROUTER PROCESSING\n\n", Dialect::Upstream, t, &mut b);
        classify(b"data: {\"a\":1}\n\n", Dialect::Upstream, t, &mut b);
        classify(b"data: [DONE]\n\n", Dialect::Upstream, t, &mut b);
        assert_eq!(b.chunk_times.len(), 1);
        assert!(b.completed);
    }
}
