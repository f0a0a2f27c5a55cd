//! Decoding of quoted literals (containerd `filters/quote.go`): Go string-literal escapes, with
//! `/` and `|` accepted as delimiters beside `"` so that regular expressions can be quoted.
//!
//! The result is bytes, not a string: `\xff` or `\377` put one raw byte in the literal, exactly as
//! in Go, and such a literal need not be valid UTF-8.

/// The literal is malformed. containerd reports this as `quote syntax error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuoteSyntaxError;

impl QuoteSyntaxError {
    /// containerd's wording (`errQuoteSyntax`).
    pub(crate) const MESSAGE: &'static str = "quote syntax error";
}

/// Decodes `quoted`, delimiters included, into the bytes it stands for.
pub(crate) fn unquote(quoted: &str) -> Result<Vec<u8>, QuoteSyntaxError> {
    let bytes = quoted.as_bytes();
    let (&open, rest) = bytes.split_first().ok_or(QuoteSyntaxError)?;
    let (&close, body) = rest.split_last().ok_or(QuoteSyntaxError)?;
    if open != close || !matches!(open, b'"' | b'/' | b'|') || body.contains(&b'\n') {
        return Err(QuoteSyntaxError);
    }

    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            // A bare delimiter inside the literal would have ended it.
            b if b == open => return Err(QuoteSyntaxError),
            // Bytes of multi-byte characters are never ASCII, so copying byte by byte keeps
            // them intact.
            b'\\' => rest = unescape(rest, open, &mut out)?,
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Decodes the escape that follows a backslash, appending it to `out`; returns what follows it.
fn unescape<'a>(
    after_backslash: &'a [u8],
    quote: u8,
    out: &mut Vec<u8>,
) -> Result<&'a [u8], QuoteSyntaxError> {
    let (&kind, rest) = after_backslash.split_first().ok_or(QuoteSyntaxError)?;
    let simple = match kind {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' => Some(b'\\'),
        // Only the literal's own delimiter may be escaped.
        b'"' | b'/' | b'|' | b'\'' if kind == quote => Some(kind),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return Ok(rest);
    }

    match kind {
        b'x' => {
            let (value, rest) = number(rest, 16, 2)?;
            out.push(u8::try_from(value).map_err(|_| QuoteSyntaxError)?);
            Ok(rest)
        }
        b'u' | b'U' => {
            let (value, rest) = number(rest, 16, if kind == b'u' { 4 } else { 8 })?;
            if value > u32::from(char::MAX) {
                return Err(QuoteSyntaxError);
            }
            // Go encodes a surrogate code point as U+FFFD rather than refusing it.
            let ch = char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut buf = [0; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            Ok(rest)
        }
        b'0'..=b'7' => {
            // Three octal digits, the first being `kind`, naming one byte.
            let (value, rest) = number(after_backslash, 8, 3)?;
            out.push(u8::try_from(value).map_err(|_| QuoteSyntaxError)?);
            Ok(rest)
        }
        _ => Err(QuoteSyntaxError),
    }
}

/// Reads exactly `count` digits in `radix` from the front of `input`.
fn number(input: &[u8], radix: u32, count: usize) -> Result<(u32, &[u8]), QuoteSyntaxError> {
    if input.len() < count {
        return Err(QuoteSyntaxError);
    }
    let (digits, rest) = input.split_at(count);
    let value = digits.iter().try_fold(0u32, |acc, &d| {
        char::from(d)
            .to_digit(radix)
            .map(|v| acc * radix + v)
            .ok_or(QuoteSyntaxError)
    })?;
    Ok((value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(quoted: &str) -> String {
        String::from_utf8(unquote(quoted).expect("valid literal")).expect("utf-8 result")
    }

    #[test]
    fn plain_literals() {
        assert_eq!(text(r#""""#), "");
        assert_eq!(text(r#""more complex label""#), "more complex label");
        assert_eq!(text("/[abc]{0,2}/"), "[abc]{0,2}");
        assert_eq!(text("|foo/bar|"), "foo/bar");
        assert_eq!(text("/a|b/"), "a|b");
        assert_eq!(text(r#"|a"b|"#), r#"a"b"#);
        assert_eq!(text("\"牛\""), "牛");
    }

    #[test]
    fn simple_escapes() {
        assert_eq!(text(r#""asdf\n\tfooo""#), "asdf\n\tfooo");
        assert_eq!(text(r#""\a\b\f\r\v""#), "\u{7}\u{8}\u{c}\r\u{b}");
        assert_eq!(
            text(r#""more complex label with \\ and \"""#),
            "more complex label with \\ and \""
        );
        assert_eq!(text(r"/foo\/bar/"), "foo/bar");
        assert_eq!(text(r"|a\|b|"), "a|b");
        assert_eq!(text(r"/\\d/"), r"\d");
    }

    #[test]
    fn numeric_escapes() {
        assert_eq!(text(r#""\x41\101\u00e9\U0001F600""#), "AAé😀");
        assert_eq!(unquote(r#""\xff""#), Ok(vec![0xff]));
        assert_eq!(unquote(r#""\377""#), Ok(vec![0xff]));
        assert_eq!(unquote(r#""\000""#), Ok(vec![0]));
        // A surrogate becomes U+FFFD, as Go's encoder does.
        assert_eq!(text(r#""\ud800""#), "\u{fffd}");
    }

    #[test]
    fn refused_literals() {
        for bad in [
            r#"""#,
            r#""a/"#,
            "\"a\nb\"",
            r#""a"b""#,
            r#""\q""#,
            r#""\'""#,
            r#""\/""#,
            r"/\|/",
            r#""\x4""#,
            r#""\xzz""#,
            r#""\400""#,
            r#""\U00110000""#,
            r#""\"#,
            "'a'",
        ] {
            assert_eq!(unquote(bad), Err(QuoteSyntaxError), "{bad:?}");
        }
    }
}
