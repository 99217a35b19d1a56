//! Streaming text out of a token stream: a byte-level BPE token may end inside a
//! multi-byte UTF-8 character, so bytes wait here until their character is whole.

use super::Tokenizer;

/// Turns bytes arriving in pieces into valid UTF-8 text, holding back the bytes
/// of a character that is not complete yet. Invalid bytes (never the start of a
/// valid character) come out as U+FFFD at once, as `String::from_utf8_lossy`
/// does; [`Utf8Stream::finish`] flushes an incomplete tail the same way.
///
/// ```
/// let mut s = wgformer::data::Utf8Stream::new();
/// let euro = "€".as_bytes(); // 3 bytes
/// assert_eq!(s.push(&euro[..2]), "");
/// assert_eq!(s.push(&euro[2..]), "€");
/// assert_eq!(s.finish(), "");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    /// The start of a character whose remaining bytes have not arrived.
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // from_utf8 vouched for these bytes: the fallback never happens.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that no continuation can make valid.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // A character cut short: wait for the rest.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Bytes waiting for the rest of their character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: the bytes of an unfinished character, as U+FFFD (empty
    /// when the stream ended on a character boundary).
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

/// Decodes token ids one at a time into valid UTF-8 chunks with a
/// [`Utf8Stream`]: what the streaming output of generation prints.
///
/// ```no_run
/// # fn demo(tokenizer: &dyn wgformer::data::Tokenizer, ids: &[u32]) {
/// let mut text = wgformer::data::TokenStream::new(tokenizer);
/// for &id in ids {
///     print!("{}", text.push(id));
/// }
/// println!("{}", text.finish());
/// # }
/// ```
pub struct TokenStream<'a> {
    tokenizer: &'a dyn Tokenizer,
    bytes: Utf8Stream,
}

impl<'a> TokenStream<'a> {
    /// A stream decoding with `tokenizer`.
    pub fn new(tokenizer: &'a dyn Tokenizer) -> Self {
        TokenStream {
            tokenizer,
            bytes: Utf8Stream::new(),
        }
    }

    /// Adds token `id` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.bytes.push(&self.tokenizer.decode_bytes(&[id]))
    }

    /// Ends the stream, returning any unfinished character as U+FFFD.
    pub fn finish(self) -> String {
        self.bytes.finish()
    }
}
