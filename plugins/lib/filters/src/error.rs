//! Why a filter string was refused. The text follows containerd's `parseError` in
//! `filters/parser.go`: `filters: parse error: [<before> >|<char>|< <after>]: <reason>`, or
//! `filters: parse error: [<input>]: <reason>` when the problem is the end of the input.

use berth_errdefs::{Classify, ErrorKind};

/// A filter string that could not be parsed. Every variant carries the whole input and the byte
/// offset of the offending token, so the message can point into the input as containerd's does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The input breaks the grammar, or a quoted string in it is malformed.
    #[error("filters: parse error: {}", located(.input, *.position, .reason))]
    Syntax {
        /// The filter string as the client sent it.
        input: String,
        /// Byte offset of the offending token; `input.len()` when the input ended too soon.
        position: usize,
        /// What was wrong, in containerd's words (`expected field or quoted`, ...).
        reason: String,
    },
    /// The value of a `~=` selector is not a valid regular expression. containerd 1.6 accepts
    /// such a filter and lets it match nothing; Berth refuses it up front.
    #[error(
        "filters: parse error: {}",
        located(.input, *.position, &format!("invalid regular expression {:?}: {}", clipped(.pattern, Side::Start), .reason))
    )]
    InvalidRegex {
        /// The filter string as the client sent it.
        input: String,
        /// Byte offset of the `~=` value.
        position: usize,
        /// The pattern after unquoting.
        pattern: String,
        /// The regex engine's complaint, on one line.
        reason: String,
    },
}

impl FilterError {
    /// The filter string that was refused.
    pub fn input(&self) -> &str {
        match self {
            FilterError::Syntax { input, .. } | FilterError::InvalidRegex { input, .. } => input,
        }
    }

    /// Byte offset into [`FilterError::input`] where the problem was found.
    pub fn position(&self) -> usize {
        match self {
            FilterError::Syntax { position, .. } | FilterError::InvalidRegex { position, .. } => {
                *position
            }
        }
    }
}

impl Classify for FilterError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Most bytes of the client's input quoted on each side of the offending character (and of a
/// pattern). containerd quotes the whole input; a filter can be any length, and the message
/// travels back in one HTTP/2 header, so a long one is shortened to the part around the
/// problem.
const QUOTED: usize = 64;

/// Which part of a long text [`clipped`] keeps.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// The first [`QUOTED`] bytes, then `...`.
    Start,
    /// `...`, then the last [`QUOTED`] bytes.
    End,
}

/// `text` if it is at most [`QUOTED`] bytes, else the `side` of it, cut at a character
/// boundary.
fn clipped(text: &str, side: Side) -> std::borrow::Cow<'_, str> {
    if text.len() <= QUOTED {
        return text.into();
    }
    match side {
        Side::Start => {
            let mut end = QUOTED;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &text[..end]).into()
        }
        Side::End => {
            let mut start = text.len() - QUOTED;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            format!("...{}", &text[start..]).into()
        }
    }
}

/// Renders the bracketed part of the message: the input with the character at `position` set
/// off by `>|` and `|<`, or the bare input when `position` is at (or past) its end; at most
/// [`QUOTED`] bytes on each side.
fn located(input: &str, position: usize, reason: &str) -> String {
    // containerd slices one byte here, which can split a multi-byte character; marking the
    // whole character keeps the message valid UTF-8 and reads the same for ASCII input.
    let marked = input
        .get(position..)
        .and_then(|rest| rest.chars().next())
        .map(|ch| (&input[..position], ch, &input[position + ch.len_utf8()..]));
    match marked {
        Some((before, ch, after)) => format!(
            "[{} >|{ch}|< {}]: {reason}",
            clipped(before, Side::End),
            clipped(after, Side::Start)
        ),
        None => format!("[{}]: {reason}", clipped(input, Side::End)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(input: &str, position: usize, reason: &str) -> FilterError {
        FilterError::Syntax {
            input: input.to_owned(),
            position,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn marks_the_offending_character() {
        let err = syntax("image~=,id?=?fbaq", 7, "expected value or quoted");
        assert_eq!(
            err.to_string(),
            "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted"
        );
    }

    #[test]
    fn end_of_input_shows_the_whole_input() {
        let err = syntax("name==foo,", 10, "expected field or quoted");
        assert_eq!(
            err.to_string(),
            "filters: parse error: [name==foo,]: expected field or quoted"
        );
    }

    #[test]
    fn first_and_last_characters() {
        assert_eq!(
            syntax("?a", 0, "x").to_string(),
            "filters: parse error: [ >|?|< a]: x"
        );
        assert_eq!(
            syntax("a?", 1, "x").to_string(),
            "filters: parse error: [a >|?|< ]: x"
        );
    }

    #[test]
    fn multibyte_character_is_marked_whole() {
        let err = syntax("name==牛 x", 6, "x");
        assert_eq!(
            err.to_string(),
            "filters: parse error: [name== >|牛|<  x]: x"
        );
    }

    #[test]
    fn position_off_a_char_boundary_falls_back_to_the_whole_input() {
        let err = syntax("牛", 1, "x");
        assert_eq!(err.to_string(), "filters: parse error: [牛]: x");
    }

    #[test]
    fn invalid_regex_message() {
        let err = FilterError::InvalidRegex {
            input: "name~=[".to_owned(),
            position: 6,
            pattern: "[".to_owned(),
            reason: "unclosed character class".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "filters: parse error: [name~= >|[|< ]: invalid regular expression \"[\": \
             unclosed character class"
        );
        assert_eq!(err.input(), "name~=[");
        assert_eq!(err.position(), 6);
    }

    #[test]
    fn long_input_is_quoted_around_the_problem_only() {
        let input = format!("labels.a~=[{}", "x".repeat(100_000));
        let err = FilterError::InvalidRegex {
            input: input.clone(),
            position: 10,
            pattern: input[10..].to_owned(),
            reason: "unclosed character class".to_owned(),
        };
        let text = err.to_string();
        assert!(text.len() < 300, "{text}");
        assert_eq!(
            text,
            format!(
                "filters: parse error: [labels.a~= >|[|< {}...]: invalid regular expression \
                 \"[{}...\": unclosed character class",
                "x".repeat(64),
                "x".repeat(63)
            )
        );

        let input = format!("name=={},?", "é".repeat(50_000));
        let position = input.len() - 1;
        let text = syntax(&input, position, "expected field or quoted").to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            text.ends_with("éé, >|?|< ]: expected field or quoted"),
            "{text}"
        );
        let text = syntax(&input, input.len(), "x").to_string();
        assert!(text.starts_with("filters: parse error: [...éé"), "{text}");
    }

    #[test]
    fn always_invalid_argument() {
        assert_eq!(syntax("", 0, "x").kind(), ErrorKind::InvalidArgument);
        let err = FilterError::InvalidRegex {
            input: String::new(),
            position: 0,
            pattern: String::new(),
            reason: String::new(),
        };
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }
}
