//! The kernel engine's loopback server answers the requests it receives
//! (cli.md `--answers`): it frames them as they arrive and, after each
//! one's last byte, writes the status the list gives it — what the
//! reference evaluator's `ServerAnswers` model says the server does.
//!
//! The answers are framed so that the receive side can follow them
//! (docs/receive-side.md): `HTTP/1.1 S PHRASE`, then `Content-Length: 0`
//! except where a response has no body (1xx, 204, 304, a 2xx to CONNECT).
//! A switch request is its head and its body, chunked or not (language.md
//! §1); once the server agrees to a switch it frames nothing more. A request the list gives no
//! answer is never answered, and neither is any request after it.
//!
//! This framer only has to follow what the program let through (strict
//! HTTP/1.1), or, in audit mode, give up where framing is lost: a head
//! it cannot read stops the answers, as the reference stops its verdicts.

use l7c_abi::verdict::{reason_phrase, RequestKind, ServerAnswers};

/// Where the framer is in the request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Head,
    /// Body bytes left before the request (of `kind`) ends.
    Body { left: u64, kind: RequestKind },
    /// A chunked body: the bytes of the current line so far, or the data
    /// left in a chunk (then its CRLF).
    Chunked { state: Chunk, kind: RequestKind },
    /// A tunnel was agreed to, or framing was lost: nothing more.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    SizeLine(Vec<u8>),
    Data(u64),
    DataEnd(u8),
    Trailer(Vec<u8>),
}

/// The server's side of `--answers`.
#[derive(Debug)]
pub struct Answerer {
    answers: ServerAnswers,
    frame: Frame,
    head: Vec<u8>,
    /// Requests framed so far (the next one's index).
    requests: usize,
}

impl Answerer {
    pub fn new(answers: ServerAnswers) -> Answerer {
        Answerer { answers, frame: Frame::Head, head: Vec::new(), requests: 0 }
    }

    /// Feeds bytes the server received; returns the responses to write,
    /// in order, for every request that ended in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            match &mut self.frame {
                Frame::Done => break,
                Frame::Head => {
                    let Some(byte) = bytes.first().copied() else { break };
                    bytes = bytes.get(1..).unwrap_or_default();
                    self.head.push(byte);
                    if self.head.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(&mut self.head);
                        self.frame = match framing(&head) {
                            Some((kind, Body::Length(0))) => {
                                self.answer(kind, &mut out);
                                continue;
                            }
                            Some((kind, Body::Length(left))) => Frame::Body { left, kind },
                            Some((kind, Body::Chunked)) => {
                                Frame::Chunked { state: Chunk::SizeLine(Vec::new()), kind }
                            }
                            None => Frame::Done,
                        };
                    } else if self.head.len() > 64 * 1024 {
                        self.frame = Frame::Done;
                    }
                }
                Frame::Body { left, kind } => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = bytes.get(take as usize..).unwrap_or_default();
                    if *left == 0 {
                        let kind = *kind;
                        self.answer(kind, &mut out);
                    }
                }
                Frame::Chunked { state, kind } => {
                    let kind = *kind;
                    let Some(byte) = bytes.first().copied() else { break };
                    match state {
                        Chunk::Data(left) => {
                            let take = (*left).min(bytes.len() as u64);
                            *left -= take;
                            bytes = bytes.get(take as usize..).unwrap_or_default();
                            if *left == 0 {
                                *state = Chunk::DataEnd(0);
                            }
                            continue;
                        }
                        Chunk::DataEnd(seen) => {
                            *seen += 1;
                            if *seen == 2 {
                                *state = Chunk::SizeLine(Vec::new());
                            }
                        }
                        Chunk::SizeLine(line) => {
                            line.push(byte);
                            if line.ends_with(b"\r\n") {
                                let digits: Vec<u8> =
                                    line.iter().copied().take_while(u8::is_ascii_hexdigit).collect();
                                let size = std::str::from_utf8(&digits).ok().and_then(|d| u64::from_str_radix(d, 16).ok());
                                match size {
                                    Some(0) => *state = Chunk::Trailer(Vec::new()),
                                    Some(size) => *state = Chunk::Data(size),
                                    None => {
                                        self.frame = Frame::Done;
                                        break;
                                    }
                                }
                            }
                        }
                        Chunk::Trailer(line) => {
                            line.push(byte);
                            if line.ends_with(b"\r\n") {
                                if line.len() == 2 {
                                    bytes = bytes.get(1..).unwrap_or_default();
                                    self.answer(kind, &mut out);
                                    continue;
                                }
                                line.clear();
                            }
                        }
                    }
                    bytes = bytes.get(1..).unwrap_or_default();
                }
            }
        }
        out
    }

    /// The request just ended: its answer, if the list has one.
    fn answer(&mut self, kind: RequestKind, out: &mut Vec<u8>) {
        let index = self.requests;
        self.requests += 1;
        self.frame = Frame::Head;
        let Some(status) = self.answers.status(index, kind) else {
            self.frame = Frame::Done;
            return;
        };
        out.extend_from_slice(&response(status, kind));
        if ServerAnswers::consents(kind, status) {
            self.frame = Frame::Done;
        }
    }
}

enum Body {
    Length(u64),
    Chunked,
}

/// The kind and body of a request head (`None`: not readable).
fn framing(head: &[u8]) -> Option<(RequestKind, Body)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let method = lines.next()?.split(' ').next()?;
    let mut kind = if method == "CONNECT" { RequestKind::Connect } else { RequestKind::Plain };
    let mut length = 0u64;
    let mut chunked = false;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "transfer-encoding" => chunked = true,
            "upgrade" if kind == RequestKind::Plain => kind = RequestKind::Upgrade,
            _ => {}
        }
    }
    let body = if chunked { Body::Chunked } else { Body::Length(length) };
    Some((kind, body))
}

/// The server's response with `status` to a request of `kind`.
pub fn response(status: u16, kind: RequestKind) -> Vec<u8> {
    let phrase = match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        _ => reason_phrase(status),
    };
    let no_body = (100..200).contains(&status)
        || status == 204
        || status == 304
        || (kind == RequestKind::Connect && (200..300).contains(&status));
    let mut out = format!("HTTP/1.1 {status} {phrase}\r\n");
    if status == 101 {
        out.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\n");
    }
    if !no_body {
        out.push_str("Content-Length: 0\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed_in_pieces(answers: ServerAnswers, input: &[u8], piece: usize) -> Vec<u8> {
        let mut answerer = Answerer::new(answers);
        input.chunks(piece).flat_map(|chunk| answerer.feed(chunk)).collect()
    }

    #[test]
    fn each_request_is_answered_after_its_last_byte_whatever_the_pieces() {
        let input = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n";
        let expected = [response(200, RequestKind::Plain), response(404, RequestKind::Plain), response(500, RequestKind::Plain)].concat();
        for piece in [1, 2, 7, input.len()] {
            assert_eq!(fed_in_pieces(ServerAnswers::Listed(vec![200, 404, 500]), input, piece), expected, "pieces of {piece}");
        }
        let mut answerer = Answerer::new(ServerAnswers::Agreeing);
        assert!(answerer.feed(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nab").is_empty(), "not before the body's last byte");
        assert_eq!(answerer.feed(b"c"), response(200, RequestKind::Plain));
    }

    #[test]
    fn a_switch_agreed_to_ends_the_framing_and_a_refused_one_does_not() {
        let upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        let after = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let agreed = fed_in_pieces(ServerAnswers::Agreeing, &[&upgrade[..], after].concat(), 5);
        assert_eq!(agreed, response(101, RequestKind::Upgrade));
        let refused = fed_in_pieces(ServerAnswers::Listed(vec![404, 200]), &[&upgrade[..], after].concat(), 5);
        assert_eq!(refused, [response(404, RequestKind::Upgrade), response(200, RequestKind::Plain)].concat());
        let connect = fed_in_pieces(ServerAnswers::Agreeing, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nxyz", 3);
        assert_eq!(connect, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn requests_past_the_list_are_never_answered() {
        let two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(fed_in_pieces(ServerAnswers::Listed(vec![204]), two, 4), b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(fed_in_pieces(ServerAnswers::Listed(vec![]), two, 4).is_empty());
    }
}
