//! Restart policies as containerd 1.7's `restart.NewPolicy` parses them and `restart.Reconcile`
//! applies them: `no`, `always` (also the empty string), `on-failure[:N]`, `unless-stopped`.

use std::collections::BTreeMap;
use std::fmt;

use crate::label;

/// A policy string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not one of the four names.
    #[error(
        "restart policy {0:?} not supported (want no, always, on-failure[:N] or unless-stopped)"
    )]
    Unknown(String),
    /// `always:3` and the like.
    #[error("restart policy {0:?} not support max retry count")]
    CountNotSupported(String),
    /// `on-failure:x`, or a negative count.
    #[error("invalid max retry count: {0}")]
    BadCount(String),
}

/// The policy's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Never restart.
    No,
    /// Restart whatever the exit status.
    Always,
    /// Restart after a non-zero exit, up to a count (0: no limit).
    OnFailure,
    /// Restart unless a user stopped the container.
    UnlessStopped,
}

/// A parsed restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Its name.
    pub kind: Kind,
    /// `on-failure`'s maximum retry count (0: unlimited).
    pub max_retries: u32,
}

impl Policy {
    /// Parses a policy string (`restart.NewPolicy`; the empty string is `always`).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let kind = match name {
            "" | "always" => Kind::Always,
            "no" => Kind::No,
            "unless-stopped" => Kind::UnlessStopped,
            "on-failure" => Kind::OnFailure,
            _ => return Err(PolicyError::Unknown(text.to_owned())),
        };
        let max_retries = match (kind, count) {
            (_, None) => 0,
            (Kind::OnFailure, Some(count)) => count
                .parse::<u32>()
                .map_err(|_| PolicyError::BadCount(count.to_owned()))?,
            (_, Some(_)) => return Err(PolicyError::CountNotSupported(name.to_owned())),
        };
        Ok(Policy { kind, max_retries })
    }

    /// Whether a container whose task stopped with `exit_status` is to be started again
    /// (`restart.Reconcile`): an unparsable policy or count never restarts.
    pub fn should_restart(labels: &BTreeMap<String, String>, exit_status: u32) -> bool {
        let text = labels.get(label::POLICY).map(String::as_str).unwrap_or("");
        let Ok(policy) = Policy::parse(text) else {
            return false;
        };
        match policy.kind {
            Kind::Always => true,
            Kind::No => false,
            Kind::OnFailure => {
                let count = match labels.get(label::COUNT).map(String::as_str) {
                    None | Some("") => 0,
                    Some(n) => match n.parse::<u32>() {
                        Ok(n) => n,
                        Err(_) => return false,
                    },
                };
                exit_status != 0 && (policy.max_retries == 0 || count < policy.max_retries)
            }
            Kind::UnlessStopped => !labels
                .get(label::EXPLICITLY_STOPPED)
                .is_some_and(|v| parse_go_bool(v)),
        }
    }
}

/// Go's `strconv.ParseBool` true values (anything else, errors included, is false).
fn parse_go_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            Kind::No => "no",
            Kind::Always => "always",
            Kind::OnFailure => "on-failure",
            Kind::UnlessStopped => "unless-stopped",
        };
        if self.max_retries > 0 {
            write!(f, "{name}:{}", self.max_retries)
        } else {
            f.write_str(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_like_containerd() {
        assert_eq!(Policy::parse("").unwrap().to_string(), "always");
        assert_eq!(Policy::parse("always").unwrap().kind, Kind::Always);
        assert_eq!(Policy::parse("no").unwrap().to_string(), "no");
        assert_eq!(
            Policy::parse("unless-stopped").unwrap().kind,
            Kind::UnlessStopped
        );
        let p = Policy::parse("on-failure:2").unwrap();
        assert_eq!((p.kind, p.max_retries), (Kind::OnFailure, 2));
        assert_eq!(p.to_string(), "on-failure:2");
        assert_eq!(Policy::parse("on-failure").unwrap().max_retries, 0);
        assert_eq!(
            Policy::parse("sometimes").unwrap_err(),
            PolicyError::Unknown("sometimes".into())
        );
        assert!(Policy::parse("sometimes")
            .unwrap_err()
            .to_string()
            .contains("\"sometimes\" not supported"));
        assert_eq!(
            Policy::parse("always:3").unwrap_err(),
            PolicyError::CountNotSupported("always".into())
        );
        assert_eq!(
            Policy::parse("on-failure:x").unwrap_err(),
            PolicyError::BadCount("x".into())
        );
        assert!(Policy::parse("on-failure:-1").is_err());
    }

    #[test]
    fn reconciles_like_containerd() {
        // No policy label: a 1.6-style container, always restarted.
        assert!(Policy::should_restart(&labels(&[]), 0));
        let always = labels(&[(label::POLICY, "always")]);
        assert!(Policy::should_restart(&always, 0));
        assert!(!Policy::should_restart(
            &labels(&[(label::POLICY, "no")]),
            1
        ));
        let on_failure = labels(&[(label::POLICY, "on-failure:2"), (label::COUNT, "1")]);
        assert!(Policy::should_restart(&on_failure, 137));
        assert!(!Policy::should_restart(&on_failure, 0));
        let spent = labels(&[(label::POLICY, "on-failure:2"), (label::COUNT, "2")]);
        assert!(!Policy::should_restart(&spent, 1));
        let unlimited = labels(&[(label::POLICY, "on-failure"), (label::COUNT, "99")]);
        assert!(Policy::should_restart(&unlimited, 1));
        let bad_count = labels(&[(label::POLICY, "on-failure"), (label::COUNT, "x")]);
        assert!(!Policy::should_restart(&bad_count, 1));
        let unless = labels(&[(label::POLICY, "unless-stopped")]);
        assert!(Policy::should_restart(&unless, 0));
        let stopped = labels(&[
            (label::POLICY, "unless-stopped"),
            (label::EXPLICITLY_STOPPED, "true"),
        ]);
        assert!(!Policy::should_restart(&stopped, 137));
        let restarted = labels(&[
            (label::POLICY, "unless-stopped"),
            (label::EXPLICITLY_STOPPED, "false"),
        ]);
        assert!(Policy::should_restart(&restarted, 137));
        assert!(!Policy::should_restart(
            &labels(&[(label::POLICY, "bogus")]),
            1
        ));
    }
}
