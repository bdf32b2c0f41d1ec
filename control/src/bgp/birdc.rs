//! BIRD's control socket, what `birdc -s SOCKET` speaks: a line protocol. After the
//! greeting (`0001 BIRD 2.0.12 ready.`) each command gets a reply of lines, each a
//! four-digit code and `-` (more follows) or ` ` (the reply ends here) and text, or a
//! continuation line starting with a space that belongs to the code before it. Codes
//! from 8000 are errors (`8002 …: syntax error`, `9001 syntax error`); lines starting
//! with `+` are asynchronous messages, not part of a reply.
//!
//! [`ReplyParser`] reads lines (sans-IO, tested with captured replies); [`Birdc`] is one
//! connection, every read and write bounded in time and size.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest line taken (BIRD's are short; a route dump line is well under this).
const MAX_LINE_BYTES: usize = 64 << 10;
/// The most lines one reply may have.
const MAX_REPLY_LINES: usize = 1 << 20;

/// One line of a reply: its code (a continuation line has the code before it) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

/// Why a command did not get a good reply.
#[derive(Debug, thiserror::Error)]
pub enum BirdcError {
    #[error("BIRD's control socket {}: {source}", socket.display())]
    Io { socket: PathBuf, source: io::Error },
    /// BIRD answered with an error code.
    #[error("BIRD refused `{command}`: {message} (code {code})")]
    Refused {
        command: String,
        code: u16,
        message: String,
    },
    /// What came back is not BIRD's protocol.
    #[error("BIRD's control socket {}: {reason}", socket.display())]
    Malformed { socket: PathBuf, reason: String },
}

/// Reads the lines of one reply (sans-IO).
#[derive(Debug, Default)]
pub struct ReplyParser {
    lines: Vec<Line>,
}

/// What one line did to a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// More lines follow.
    More,
    /// The reply is complete (see [`ReplyParser::finish`]).
    Done,
}

impl ReplyParser {
    /// Takes one line (without its `\n`).
    pub fn feed(&mut self, line: &str) -> Result<Fed, String> {
        if line.starts_with('+') {
            return Ok(Fed::More);
        }
        if let Some(text) = line.strip_prefix(' ') {
            let Some(code) = self.lines.last().map(|l| l.code) else {
                return Err(format!("a continuation line opens the reply: {line:?}"));
            };
            self.push(code, text)?;
            return Ok(Fed::More);
        }
        let (code, rest) = line
            .split_at_checked(4)
            .ok_or_else(|| format!("not a reply line: {line:?}"))?;
        let code: u16 = code
            .parse()
            .ok()
            .filter(|_| code.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("not a reply line: {line:?}"))?;
        let (last, text) = match rest.split_at_checked(1) {
            Some((" ", text)) => (true, text),
            Some(("-", text)) => (false, text),
            _ if rest.is_empty() => (true, ""),
            _ => return Err(format!("not a reply line: {line:?}")),
        };
        self.push(code, text)?;
        Ok(if last { Fed::Done } else { Fed::More })
    }

    fn push(&mut self, code: u16, text: &str) -> Result<(), String> {
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(format!("a reply longer than {MAX_REPLY_LINES} lines"));
        }
        self.lines.push(Line {
            code,
            text: text.to_string(),
        });
        Ok(())
    }

    /// The reply's lines, or the error it ends with (`command` names it in the message).
    pub fn finish(self, command: &str) -> Result<Vec<Line>, BirdcError> {
        match self.lines.last() {
            Some(last) if last.code >= 8000 => Err(BirdcError::Refused {
                command: command.to_string(),
                code: last.code,
                message: last.text.clone(),
            }),
            _ => Ok(self.lines),
        }
    }
}

/// One connection to BIRD's control socket.
pub struct Birdc {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    /// BIRD's greeting (`BIRD 2.0.12 ready.`).
    pub greeting: String,
}

impl fmt::Debug for Birdc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Birdc")
            .field("socket", &self.socket)
            .finish()
    }
}

impl Birdc {
    /// Connects and reads the greeting; every later read or write waits at most
    /// `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Birdc, BirdcError> {
        let io_error = |source| BirdcError::Io {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(io_error)?;
        stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        let mut birdc = Birdc {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            greeting: String::new(),
        };
        let lines = birdc.read_reply("(greeting)")?;
        birdc.greeting = lines.first().map(|l| l.text.clone()).unwrap_or_default();
        Ok(birdc)
    }

    /// Runs one command (`show protocols`, `configure`); its reply's lines, or the error
    /// BIRD answered with.
    pub fn command(&mut self, command: &str) -> Result<Vec<Line>, BirdcError> {
        if command.contains('\n') {
            return Err(BirdcError::Malformed {
                socket: self.socket.clone(),
                reason: format!("a command is one line: {command:?}"),
            });
        }
        self.reader
            .get_mut()
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|source| BirdcError::Io {
                socket: self.socket.clone(),
                source,
            })?;
        self.read_reply(command)
    }

    fn read_reply(&mut self, command: &str) -> Result<Vec<Line>, BirdcError> {
        let mut parser = ReplyParser::default();
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|source| BirdcError::Io {
                    socket: self.socket.clone(),
                    source,
                })?;
            let malformed = |reason: String| BirdcError::Malformed {
                socket: self.socket.clone(),
                reason,
            };
            if read == 0 {
                return Err(malformed(format!(
                    "BIRD closed the connection in the middle of the reply to `{command}`"
                )));
            }
            if line.last() != Some(&b'\n') {
                return Err(malformed(format!(
                    "a reply line longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            if parser.feed(&text).map_err(malformed)? == Fed::Done {
                return parser.finish(command);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(reply: &str) -> Result<Vec<Line>, BirdcError> {
        let mut parser = ReplyParser::default();
        for line in reply.lines() {
            if parser.feed(line).unwrap() == Fed::Done {
                return parser.finish("cmd");
            }
        }
        panic!("the reply did not end");
    }

    fn line(code: u16, text: &str) -> Line {
        Line {
            code,
            text: text.into(),
        }
    }

    #[test]
    fn replies_captured_from_bird_2_0_12() {
        // `show status`.
        let status = parse(
            "1000-BIRD 2.0.12\n1011-Router ID is 192.168.0.1\n Hostname is vm\n Current server time is 2026-12-02 02:46:46.766\n Last reboot on 2026-12-02 02:43:34.660\n Last reconfiguration on 2026-12-02 02:43:34.660\n0013 Daemon is up and running\n",
        )
        .unwrap();
        assert_eq!(status.len(), 7);
        assert_eq!(status[0], line(1000, "BIRD 2.0.12"));
        assert_eq!(status[2], line(1011, "Hostname is vm"));
        assert_eq!(status[6], line(13, "Daemon is up and running"));
        // `configure`, and a configuration BIRD refuses.
        let configured =
            parse("0002-Reading configuration from /run/bird.conf\n0003 Reconfigured\n").unwrap();
        assert_eq!(configured[1], line(3, "Reconfigured"));
        let err = parse("0002-Reading configuration from /tmp/a3.conf\n8002 /tmp/a3.conf:102:10 syntax error, unexpected CF_SYM_UNDEFINED\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "BIRD refused `cmd`: /tmp/a3.conf:102:10 syntax error, unexpected CF_SYM_UNDEFINED (code 8002)"
        );
        let err = parse("9001 syntax error, unexpected CF_SYM_UNDEFINED\n").unwrap_err();
        assert!(
            matches!(err, BirdcError::Refused { code: 9001, .. }),
            "{err}"
        );
        // An empty success, and an asynchronous message in between.
        assert_eq!(parse("+log line\n0000 \n").unwrap(), [line(0, "")]);
    }

    #[test]
    fn what_is_not_birds_protocol_is_an_error() {
        for bad in [
            " continuation first",
            "12 short",
            "abcd-letters",
            "1002?odd",
            "\u{e9}\u{e9}\u{e9}\u{e9}x",
        ] {
            assert!(ReplyParser::default().feed(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ReplyParser::default().feed("0000").unwrap(), Fed::Done);
    }
}
