//! The one liberty of the stand-in: processes do not get the container's filesystem. Each volume
//! mount's `mountPath` maps to a host directory, and occurrences of a mount path in a container's
//! command, args and env values are rewritten to that directory (a path inside a mount keeps its
//! remainder: `/data/ipfs/config` becomes `<host dir>/config`).

use std::path::PathBuf;

/// One mount of a container: where the container sees it, and the host directory behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub mount_path: String,
    pub host_dir: PathBuf,
}

/// Rewrites every mount path in `text` that stands as a whole path (or the start of one), longest
/// mount first, in one pass (a host directory is never rewritten again).
pub fn rewrite(text: &str, mounts: &[Mount]) -> String {
    let mut by_length: Vec<&Mount> = mounts.iter().filter(|m| m.mount_path.len() > 1).collect();
    by_length.sort_by_key(|m| std::cmp::Reverse(m.mount_path.trim_end_matches('/').len()));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    'scan: while at < text.len() {
        let starts_path = text[..at].chars().next_back().is_none_or(|c| !is_path_char(c));
        if starts_path {
            for mount in &by_length {
                let path = mount.mount_path.trim_end_matches('/');
                let Some(rest) = text[at..].strip_prefix(path) else { continue };
                if rest.chars().next().is_none_or(|c| c == '/' || !is_path_char(c)) {
                    out.push_str(&mount.host_dir.display().to_string());
                    at += path.len();
                    continue 'scan;
                }
            }
        }
        let c = text[at..].chars().next().unwrap_or_default();
        out.push(c);
        at += c.len_utf8();
    }
    out
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_mount_paths_where_they_stand_as_paths() {
        let mounts = [
            Mount { mount_path: "/data".into(), host_dir: "/tmp/h/data".into() },
            Mount { mount_path: "/data/ipfs/".into(), host_dir: "/tmp/h/ipfs".into() },
            Mount { mount_path: "/tmp".into(), host_dir: "/tmp/h/tmp".into() },
        ];
        for (text, rewritten) in [
            ("/data", "/tmp/h/data"),
            ("/data/peer/id", "/tmp/h/data/peer/id"),
            ("/data/ipfs", "/tmp/h/ipfs"),
            ("/data/ipfs/config", "/tmp/h/ipfs/config"),
            ("--data-dir=/data/x", "--data-dir=/tmp/h/data/x"),
            ("a:/data,b:/tmp", "a:/tmp/h/data,b:/tmp/h/tmp"),
            ("/database", "/database"),
            ("/var/data", "/var/data"),
            ("http://host/data", "http://host/data"),
            ("/tmp/x /data", "/tmp/h/tmp/x /tmp/h/data"),
            ("no paths", "no paths"),
            ("ünïcode /data", "ünïcode /tmp/h/data"),
        ] {
            assert_eq!(rewrite(text, &mounts), rewritten, "rewriting {text:?}");
        }
    }
}
