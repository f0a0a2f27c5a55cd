//! The process's user and groups, from the request's security context, the image's `USER`
//! and the image's `/etc/passwd` and `/etc/group` (containerd `generateUserString`,
//! `oci.WithUser`, `oci.WithAdditionalGIDs`).

use std::path::Path;

use berth_proto::runtime::v1::Int64Value;

use super::rootfs::resolve_in_root;
use crate::error::{CriError, Result};

/// A line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// A line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// The entries of a passwd file; malformed lines and comments are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_owned(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
            })
        })
        .filter(|e| !e.name.is_empty())
        .collect()
}

/// The entries of a group file; malformed lines and comments are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: (*f.first()?).to_owned(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .filter(|e| !e.name.is_empty())
        .collect()
}

/// An image's user database; `None` where the file does not exist.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    /// `/etc/passwd`.
    pub passwd: Option<Vec<PasswdEntry>>,
    /// `/etc/group`.
    pub group: Option<Vec<GroupEntry>>,
}

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group` of the rootfs at `root`, symlinks resolved inside
    /// it.
    pub fn read(root: &Path) -> Result<UserDb> {
        let read = |name: &str| -> Result<Option<String>> {
            let path = resolve_in_root(root, Path::new(name))?;
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CriError::io("reading", &path, e)),
            }
        };
        Ok(UserDb {
            passwd: read("/etc/passwd")?.map(|t| parse_passwd(&t)),
            group: read("/etc/group")?.map(|t| parse_group(&t)),
        })
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.uid == uid)
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.as_ref()?.iter().find(|u| u.name == name)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.as_ref()?.iter().find(|g| g.name == name)
    }
}

/// The user string of a security context: `uid` or `username`, with `:gid` when a group is
/// given; empty when nothing is. A group without a user is refused, as containerd does.
pub fn user_string(
    username: &str,
    uid: Option<&Int64Value>,
    gid: Option<&Int64Value>,
    field: &str,
) -> Result<String> {
    let mut user = uid.map(|u| u.value.to_string()).unwrap_or_default();
    if !username.is_empty() {
        user = username.to_owned();
    }
    if user.is_empty() {
        if let Some(g) = gid {
            return Err(CriError::invalid(
                format!("{field}.run_as_group"),
                format!("user group {} is specified without user", g.value),
            ));
        }
        return Ok(String::new());
    }
    Ok(match gid {
        Some(g) => format!("{user}:{}", g.value),
        None => user,
    })
}

/// The uid and gid `user` (`uid`, `name`, `uid:gid`, `name:group`, ...) names in `db`:
/// a numeric user missing from passwd runs with gid 0; a name must exist.
pub fn resolve(db: &UserDb, user: &str, field: &str) -> Result<(u32, u32)> {
    let parts: Vec<&str> = user.split(':').collect();
    let unknown = |what: &str, name: &str| {
        CriError::invalid(
            field,
            format!(
                "no {what} {name:?} in the image's /etc/{what_file}",
                what_file = if what == "user" { "passwd" } else { "group" }
            ),
        )
    };
    match parts.as_slice() {
        [one] => match one.parse::<u32>() {
            Ok(uid) => Ok(db.user_by_uid(uid).map_or((uid, 0), |u| (u.uid, u.gid))),
            Err(_) => db
                .user_by_name(one)
                .map(|u| (u.uid, u.gid))
                .ok_or_else(|| unknown("user", one)),
        },
        [u, g] => {
            let uid = match u.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => db.user_by_name(u).ok_or_else(|| unknown("user", u))?.uid,
            };
            let gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => db.group_by_name(g).ok_or_else(|| unknown("group", g))?.gid,
            };
            Ok((uid, gid))
        }
        _ => Err(CriError::invalid(field, format!("invalid user {user:?}"))),
    }
}

/// The groups `/etc/group` lists `user` (a uid or a name) as a member of, except the group
/// named like the user; none when the user or the files are missing.
pub fn member_gids(db: &UserDb, user: &str) -> Vec<u32> {
    let name = match user.parse::<u32>() {
        Ok(uid) => match db.user_by_uid(uid) {
            Some(u) => u.name.clone(),
            None => return Vec::new(),
        },
        Err(_) => user.to_owned(),
    };
    let Some(groups) = &db.group else {
        return Vec::new();
    };
    groups
        .iter()
        .filter(|g| g.name != name && g.members.contains(&name))
        .map(|g| g.gid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1::/:/bin/false\n\
        www:x:33:33::/var/www:/bin/sh\n\
        nobody:x:65534:65534:nobody:/:/bin/false\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:www\n\
        www:x:33:www\n\
        audio:x:29:www,root\n\
        video:x:44:root\n\
        nogroup:x:65534:\n";

    fn db() -> UserDb {
        UserDb {
            passwd: Some(parse_passwd(PASSWD)),
            group: Some(parse_group(GROUP)),
        }
    }

    const F: &str = "config.linux.security_context";

    #[test]
    fn files_parse() {
        let p = parse_passwd(PASSWD);
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[2],
            PasswdEntry {
                name: "www".into(),
                uid: 33,
                gid: 33
            }
        );
        let g = parse_group(GROUP);
        assert_eq!(g[3].members, vec!["www", "root"]);
        assert!(g[0].members.is_empty());
    }

    #[test]
    fn user_strings_as_containerd() {
        let v = |n| Some(Int64Value { value: n });
        assert_eq!(user_string("", None, None, F).unwrap(), "");
        assert_eq!(user_string("", v(1000).as_ref(), None, F).unwrap(), "1000");
        assert_eq!(
            user_string("", v(1000).as_ref(), v(50).as_ref(), F).unwrap(),
            "1000:50"
        );
        assert_eq!(
            user_string("www", v(1000).as_ref(), None, F).unwrap(),
            "www"
        );
        assert_eq!(user_string("www", None, v(7).as_ref(), F).unwrap(), "www:7");
        let err = user_string("", None, v(50).as_ref(), F).unwrap_err();
        assert!(err.to_string().contains("run_as_group"), "{err}");
    }

    #[test]
    fn users_resolve() {
        let db = db();
        assert_eq!(resolve(&db, "33", F).unwrap(), (33, 33));
        assert_eq!(resolve(&db, "1234", F).unwrap(), (1234, 0));
        assert_eq!(resolve(&db, "www", F).unwrap(), (33, 33));
        assert_eq!(resolve(&db, "www:audio", F).unwrap(), (33, 29));
        assert_eq!(resolve(&db, "1234:5", F).unwrap(), (1234, 5));
        assert!(resolve(&db, "ghost", F).is_err());
        assert!(resolve(&db, "www:ghosts", F).is_err());
        assert!(resolve(&db, "a:b:c", F).is_err());
        let empty = UserDb::default();
        assert_eq!(resolve(&empty, "7", F).unwrap(), (7, 0));
        assert!(resolve(&empty, "www", F).is_err());
    }

    #[test]
    fn member_groups() {
        let db = db();
        assert_eq!(member_gids(&db, "www"), vec![1, 29]);
        assert_eq!(member_gids(&db, "33"), vec![1, 29]);
        assert_eq!(member_gids(&db, "0"), vec![29, 44]);
        assert!(member_gids(&db, "4242").is_empty());
        assert!(member_gids(&UserDb::default(), "www").is_empty());
    }

    #[test]
    fn files_are_read_from_the_rootfs() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), PASSWD).unwrap();
        let db = UserDb::read(t.path()).unwrap();
        assert_eq!(db.passwd.unwrap().len(), 4);
        assert!(db.group.is_none());
    }
}
