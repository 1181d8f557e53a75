//! What the fuzz targets share: how one fuzzer input becomes a body and the chunks it arrives
//! in, so that every decoder is checked against the same body split differently.

/// A fuzzer input read as `[n][n chunk lengths][body]` (`n` modulo 16).
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    /// The lengths of the chunks, used in turn until the body is used up; 0 is an empty chunk.
    pub lengths: &'a [u8],
    /// The bytes to decode.
    pub body: &'a [u8],
}

impl<'a> Split<'a> {
    /// Reads an input; a short one gives what it has.
    pub fn read(data: &'a [u8]) -> Self {
        let Some((&n, rest)) = data.split_first() else {
            return Split {
                lengths: &[],
                body: &[],
            };
        };
        let (lengths, body) = rest.split_at(usize::from(n % 16).min(rest.len()));
        Split { lengths, body }
    }

    /// The body cut into chunks.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        chunks(self.lengths, self.body)
    }
}

/// `body` cut into chunks of `lengths`, taken in turn; no lengths means one chunk. Empty chunks
/// are kept: a runtime may deliver them, and a decoder must not treat one as a boundary.
pub fn chunks<'a>(lengths: &[u8], body: &'a [u8]) -> Vec<&'a [u8]> {
    if lengths.is_empty() {
        return vec![body];
    }
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let before = rest.len();
        for &len in lengths {
            let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
            out.push(chunk);
            rest = tail;
        }
        if rest.len() == before {
            // Only zero lengths: they would never finish the body.
            out.push(rest);
            break;
        }
    }
    out
}

/// The same body cut into single bytes, the finest split there is.
pub fn bytes(body: &[u8]) -> Vec<&[u8]> {
    body.chunks(1).collect()
}
