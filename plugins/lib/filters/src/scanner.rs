//! The tokenizer (containerd `filters/scanner.go`). It works on demand: the parser asks for the
//! next token, or peeks at the next raw character. Token boundaries, positions and error texts
//! follow containerd's scanner, whose quirks are observable in error messages:
//!
//! - whitespace is skipped only in front of a token, never by a peek, so `name==a ,b` is an error;
//! - after an operator, any run of non-space, non-`,` characters is one value token;
//! - `"`, `/` and `|` always open a quoted token, whose escapes are checked here and decoded
//!   later by [`crate::quote`].

/// What kind of token was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// End of input.
    Eof,
    /// A run of `[A-Za-z0-9_]`.
    Field,
    /// The run of characters after an operator.
    Value,
    /// A complete, well-formed quoted literal, delimiters included.
    Quoted,
    /// `,` or `.`.
    Separator,
    /// A run of `=`, `!` and `~`.
    Operator,
    /// Input the scanner refuses; the message says why.
    Illegal(&'static str),
    /// A character that starts no token.
    Unexpected(char),
}

/// One token: its kind, its byte offset in the input and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) kind: TokenKind,
    pub(crate) pos: usize,
    pub(crate) text: &'a str,
}

const NOT_TERMINATED: &str = "quoted literal not terminated";
const ILLEGAL_ESCAPE: &str = "illegal escape sequence";
const ILLEGAL_NUMERIC_ESCAPE: &str = "illegal numeric escape sequence";
const UNEXPECTED_NULL: &str = "unexpected null";

/// Walks a filter string, one token at a time.
#[derive(Debug)]
pub(crate) struct Scanner<'a> {
    input: &'a str,
    /// Byte offset of the next character to read.
    cursor: usize,
    /// Set by an operator: the next unquoted run is a value, not a field.
    expect_value: bool,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(input: &'a str) -> Self {
        Scanner {
            input,
            cursor: 0,
            expect_value: false,
        }
    }

    /// Byte offset of the next character to read.
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// The next raw character, whitespace included; `None` at the end.
    pub(crate) fn peek(&self) -> Option<char> {
        self.input[self.cursor..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.cursor += ch.len_utf8();
        Some(ch)
    }

    fn bump_while(&mut self, keep: impl Fn(char) -> bool) {
        while let Some(ch) = self.peek() {
            if !keep(ch) {
                break;
            }
            self.cursor += ch.len_utf8();
        }
    }

    /// Skips whitespace and reads one token.
    pub(crate) fn scan(&mut self) -> Token<'a> {
        self.bump_while(char::is_whitespace);
        let pos = self.cursor;
        let Some(ch) = self.bump() else {
            return self.token(TokenKind::Eof, pos);
        };
        let kind = match ch {
            '\0' => TokenKind::Illegal(UNEXPECTED_NULL),
            '"' | '/' | '|' => match self.scan_quoted(ch) {
                Ok(()) => TokenKind::Quoted,
                Err(reason) => TokenKind::Illegal(reason),
            },
            ',' | '.' => {
                self.expect_value = false;
                TokenKind::Separator
            }
            '=' | '!' | '~' => {
                self.bump_while(is_operator_char);
                self.expect_value = true;
                TokenKind::Operator
            }
            // The first character of a value is taken whatever it is; only the rest must be
            // printable (containerd checks `isValueRune` from the second character on).
            _ if self.expect_value => {
                self.bump_while(is_value_char);
                self.expect_value = false;
                TokenKind::Value
            }
            _ if is_field_char(ch) => {
                self.bump_while(is_field_char);
                TokenKind::Field
            }
            other => TokenKind::Unexpected(other),
        };
        self.token(kind, pos)
    }

    fn token(&self, kind: TokenKind, pos: usize) -> Token<'a> {
        Token {
            kind,
            pos,
            text: &self.input[pos..self.cursor],
        }
    }

    /// Reads the rest of a literal opened by `quote`, checking its escapes. The first problem
    /// found is the one reported, but reading goes on to the closing quote so that the scanner
    /// resumes after the literal.
    fn scan_quoted(&mut self, quote: char) -> Result<(), &'static str> {
        let mut problem = None;
        loop {
            match self.bump() {
                None | Some('\n') => return Err(problem.unwrap_or(NOT_TERMINATED)),
                Some('\0') => return Err(problem.unwrap_or(UNEXPECTED_NULL)),
                Some(ch) if ch == quote => return problem.map_or(Ok(()), Err),
                Some('\\') => {
                    if let Err(reason) = self.scan_escape(quote) {
                        problem.get_or_insert(reason);
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// Checks the escape after a backslash. A refused character is left unread so that the
    /// literal's loop sees it (it may be the end of the line or of the input).
    fn scan_escape(&mut self, quote: char) -> Result<(), &'static str> {
        let digits = match self.peek() {
            Some(ch) if ch == quote || "abfnrtv\\".contains(ch) => {
                self.bump();
                return Ok(());
            }
            // An octal escape is three digits, the one just peeked included.
            Some('0'..='7') => (8, 3),
            Some('x') => {
                self.bump();
                (16, 2)
            }
            Some('u') => {
                self.bump();
                (16, 4)
            }
            Some('U') => {
                self.bump();
                (16, 8)
            }
            _ => return Err(ILLEGAL_ESCAPE),
        };
        let (radix, count) = digits;
        for _ in 0..count {
            match self.peek() {
                Some(ch) if ch.is_digit(radix) => {
                    self.bump();
                }
                _ => return Err(ILLEGAL_NUMERIC_ESCAPE),
            }
        }
        Ok(())
    }
}

fn is_operator_char(ch: char) -> bool {
    matches!(ch, '=' | '!' | '~')
}

fn is_field_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || ch == '_'
}

/// Characters that may continue an unquoted value. containerd asks for Go's "graphic"
/// characters; control characters are the ones that matter in practice.
fn is_value_char(ch: char) -> bool {
    ch != ',' && !ch.is_whitespace() && !ch.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans the whole input, returning `(pos, kind, text)` up to and including the end.
    fn tokens(input: &str) -> Vec<(usize, TokenKind, &str)> {
        let mut scanner = Scanner::new(input);
        let mut out = Vec::new();
        loop {
            let token = scanner.scan();
            out.push((token.pos, token.kind, token.text));
            if token.kind == TokenKind::Eof {
                break;
            }
            assert!(out.len() <= input.len() + 1, "scanner does not advance");
        }
        // Scanning past the end keeps answering Eof.
        assert_eq!(scanner.scan().kind, TokenKind::Eof);
        out
    }

    use TokenKind::{Eof, Field, Illegal, Operator, Quoted, Separator, Unexpected, Value};

    #[test]
    fn field_alone() {
        assert_eq!(tokens("name"), [(0, Field, "name"), (4, Eof, "")]);
    }

    #[test]
    fn selectors_with_separators() {
        assert_eq!(
            tokens("name==value,foo!=bar"),
            [
                (0, Field, "name"),
                (4, Operator, "=="),
                (6, Value, "value"),
                (11, Separator, ","),
                (12, Field, "foo"),
                (15, Operator, "!="),
                (17, Value, "bar"),
                (20, Eof, ""),
            ]
        );
    }

    #[test]
    fn dotted_paths_and_single_equals() {
        assert_eq!(
            tokens("name==value,labels.foo=value,other.bar~=match"),
            [
                (0, Field, "name"),
                (4, Operator, "=="),
                (6, Value, "value"),
                (11, Separator, ","),
                (12, Field, "labels"),
                (18, Separator, "."),
                (19, Field, "foo"),
                (22, Operator, "="),
                (23, Value, "value"),
                (28, Separator, ","),
                (29, Field, "other"),
                (34, Separator, "."),
                (35, Field, "bar"),
                (38, Operator, "~="),
                (40, Value, "match"),
                (45, Eof, ""),
            ]
        );
    }

    #[test]
    fn regex_values() {
        assert_eq!(
            tokens(r"name~=[abc]\+,foo=test"),
            [
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Value, r"[abc]\+"),
                (13, Separator, ","),
                (14, Field, "foo"),
                (17, Operator, "="),
                (18, Value, "test"),
                (22, Eof, ""),
            ]
        );
        assert_eq!(
            tokens("name~=/[abc]{0,2}/,foo=test"),
            [
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Quoted, "/[abc]{0,2}/"),
                (18, Separator, ","),
                (19, Field, "foo"),
                (22, Operator, "="),
                (23, Value, "test"),
                (27, Eof, ""),
            ]
        );
    }

    #[test]
    fn unicode_values_and_byte_positions() {
        assert_eq!(
            tokens("name~=牛,labels.moo=true"),
            [
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Value, "牛"),
                (9, Separator, ","),
                (10, Field, "labels"),
                (16, Separator, "."),
                (17, Field, "moo"),
                (20, Operator, "="),
                (21, Value, "true"),
                (25, Eof, ""),
            ]
        );
        assert_eq!(tokens("name~=|牛|")[2], (6, Quoted, "|牛|"));
    }

    #[test]
    fn quoted_with_escapes() {
        assert_eq!(
            tokens(r#"name~="asdf\n\tfooo""#),
            [
                (0, Field, "name"),
                (4, Operator, "~="),
                (6, Quoted, r#""asdf\n\tfooo""#),
                (20, Eof, ""),
            ]
        );
        assert_eq!(
            tokens(r"input~=/foo\/bar/,id!=ff")[2],
            (7, Quoted, r"/foo\/bar/")
        );
        assert_eq!(
            tokens("input~=|foo/bar|,id!=ff")[2],
            (7, Quoted, "|foo/bar|")
        );
        assert_eq!(tokens(r#""a\"b\\c""#)[0], (0, Quoted, r#""a\"b\\c""#));
        assert_eq!(tokens(r#""\101\x41\u0041\U00000041""#)[0].1, Quoted);
    }

    #[test]
    fn null_is_illegal_and_skipped() {
        assert_eq!(
            tokens("foo\0bar"),
            [
                (0, Field, "foo"),
                (3, Illegal("unexpected null"), "\0"),
                (4, Field, "bar"),
                (7, Eof, ""),
            ]
        );
        assert_eq!(
            tokens("\"a\0\"")[0],
            (0, Illegal("unexpected null"), "\"a\0")
        );
    }

    #[test]
    fn whitespace_is_skipped_before_tokens() {
        assert_eq!(
            tokens("foo = bar    "),
            [
                (0, Field, "foo"),
                (4, Operator, "="),
                (6, Value, "bar"),
                (13, Eof, ""),
            ]
        );
        assert_eq!(
            tokens("doublevalue=value value"),
            [
                (0, Field, "doublevalue"),
                (11, Operator, "="),
                (12, Value, "value"),
                (18, Field, "value"),
                (23, Eof, ""),
            ]
        );
    }

    #[test]
    fn values_keep_punctuation() {
        assert_eq!(
            tokens("compound.labels==punctuated_value.foo-bar"),
            [
                (0, Field, "compound"),
                (8, Separator, "."),
                (9, Field, "labels"),
                (15, Operator, "=="),
                (17, Value, "punctuated_value.foo-bar"),
                (41, Eof, ""),
            ]
        );
        assert_eq!(tokens("a==x|y=z!/")[2], (3, Value, "x|y=z!/"));
    }

    #[test]
    fn operator_at_end_and_missing_value() {
        assert_eq!(
            tokens("interrupted="),
            [
                (0, Field, "interrupted"),
                (11, Operator, "="),
                (12, Eof, "")
            ]
        );
        assert_eq!(
            tokens("input==,id!=ff"),
            [
                (0, Field, "input"),
                (5, Operator, "=="),
                (7, Separator, ","),
                (8, Field, "id"),
                (10, Operator, "!="),
                (12, Value, "ff"),
                (14, Eof, ""),
            ]
        );
    }

    #[test]
    fn leading_quoted_field() {
        assert_eq!(
            tokens(r#""leading quote".postquote==value"#),
            [
                (0, Quoted, r#""leading quote""#),
                (15, Separator, "."),
                (16, Field, "postquote"),
                (25, Operator, "=="),
                (27, Value, "value"),
                (32, Eof, ""),
            ]
        );
    }

    #[test]
    fn slash_opens_an_unterminated_literal() {
        assert_eq!(
            tokens("labels.containerd.io/key==value"),
            [
                (0, Field, "labels"),
                (6, Separator, "."),
                (7, Field, "containerd"),
                (17, Separator, "."),
                (18, Field, "io"),
                (20, Illegal(NOT_TERMINATED), "/key==value"),
                (31, Eof, ""),
            ]
        );
    }

    #[test]
    fn newline_ends_a_literal() {
        assert_eq!(
            tokens("labels.\"containerd.io\nkey\"==value"),
            [
                (0, Field, "labels"),
                (6, Separator, "."),
                (7, Illegal(NOT_TERMINATED), "\"containerd.io\n"),
                (22, Field, "key"),
                (25, Illegal(NOT_TERMINATED), "\"==value"),
                (33, Eof, ""),
            ]
        );
    }

    #[test]
    fn bad_escapes() {
        assert_eq!(
            tokens(r#"labels."\g""#)[2],
            (7, Illegal(ILLEGAL_ESCAPE), r#""\g""#)
        );
        assert_eq!(
            tokens(r#"labels."\xaz""#)[2],
            (7, Illegal(ILLEGAL_NUMERIC_ESCAPE), r#""\xaz""#)
        );
        // Each quote character may escape only itself.
        assert_eq!(tokens(r#""\/""#)[0].1, Illegal(ILLEGAL_ESCAPE));
        assert_eq!(tokens(r"/\|/")[0].1, Illegal(ILLEGAL_ESCAPE));
        assert_eq!(tokens(r"|\||")[0].1, Quoted);
        // Regex shorthands are not string escapes.
        assert_eq!(tokens(r"/\d+/")[0].1, Illegal(ILLEGAL_ESCAPE));
        // Too few digits, stopped by the closing quote or the end.
        assert_eq!(tokens(r#""\12""#)[0].1, Illegal(ILLEGAL_NUMERIC_ESCAPE));
        assert_eq!(tokens(r#""\u12"#)[0].1, Illegal(ILLEGAL_NUMERIC_ESCAPE));
        assert_eq!(
            tokens(r#""\U0001F60""#)[0].1,
            Illegal(ILLEGAL_NUMERIC_ESCAPE)
        );
    }

    #[test]
    fn first_problem_in_a_literal_wins() {
        // A bad escape, then no closing quote: the escape is reported.
        assert_eq!(tokens(r#""\q"#)[0], (0, Illegal(ILLEGAL_ESCAPE), r#""\q"#));
        // Backslash at the very end.
        assert_eq!(tokens(r#""\"#)[0], (0, Illegal(ILLEGAL_ESCAPE), r#""\"#));
        // The scanner resumes after the closing quote of a literal with a bad escape.
        assert_eq!(tokens(r#""\q",x"#)[1], (4, Separator, ","));
    }

    #[test]
    fn characters_that_start_nothing() {
        assert_eq!(tokens("?")[0], (0, Unexpected('?'), "?"));
        assert_eq!(tokens("labels.?x")[2], (7, Unexpected('?'), "?"));
    }

    #[test]
    fn value_stops_at_space_comma_and_control() {
        assert_eq!(tokens("a==b c")[2], (3, Value, "b"));
        assert_eq!(tokens("a==b,c")[2], (3, Value, "b"));
        assert_eq!(tokens("a==b\u{1}c")[2], (3, Value, "b"));
        // but the first character of a value is taken whatever it is
        assert_eq!(tokens("a==\u{1}c")[2], (3, Value, "\u{1}c"));
    }

    #[test]
    fn peek_does_not_skip_whitespace() {
        let mut scanner = Scanner::new("a ,b");
        assert_eq!(scanner.scan().text, "a");
        assert_eq!(scanner.peek(), Some(' '));
        assert_eq!(scanner.cursor(), 1);
        assert_eq!(scanner.scan().kind, Separator);
    }
}
