//! Authentication: who is calling. Client certificates signed by the cluster CA (checked by
//! the TLS layer) and bearer tokens from a static token file; anything else is anonymous,
//! which gets 401.

use std::collections::HashMap;
use std::path::Path;

use http::{HeaderMap, header};

use crate::tls::{AUTHENTICATED_GROUP, UserInfo};

/// Resolves requests to users.
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    /// Verifies service account tokens (see [`crate::serviceaccount_token`]); `None`: none
    /// are accepted.
    pub service_account_keys: Option<crate::serviceaccount_token::SharedKeys>,
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error(
        "token file {path} line {line}: {reason} (expected: token,user,uid[,\"group1,group2\"])"
    )]
    Line {
        /// The file.
        path: String,
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Authenticator {
    /// With the tokens of an upstream-format token file (`token,user,uid,"g1,g2"` per line).
    pub fn with_token_file(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_tokens(&text, &path.display().to_string())
    }

    /// Parses token file contents.
    pub fn parse_tokens(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| TokenFileError::Line {
                path: path.to_string(),
                line: i + 1,
                reason,
            };
            let (head, groups) = match line.split_once(",\"") {
                Some((h, g)) => (h, g.trim_end_matches('"')),
                None => (line, ""),
            };
            let fields: Vec<&str> = head.split(',').map(str::trim).collect();
            if fields.len() < 3 {
                return Err(err("fewer than 3 fields"));
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err(err("empty token or user"));
            }
            let mut groups: Vec<String> = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .chain(
                    fields
                        .iter()
                        .skip(3)
                        .filter(|g| !g.is_empty())
                        .map(|g| g.to_string()),
                )
                .collect();
            groups.push(AUTHENTICATED_GROUP.to_string());
            tokens.insert(
                fields[0].to_string(),
                UserInfo {
                    name: fields[1].to_string(),
                    groups,
                },
            );
        }
        Ok(Self {
            tokens,
            service_account_keys: None,
        })
    }

    /// The user of a request: the client certificate's, else the bearer token's.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<UserInfo>) -> Option<UserInfo> {
        if peer.is_some() {
            return peer;
        }
        let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = auth.strip_prefix("Bearer ")?.trim();
        self.tokens.get(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let a = Authenticator::parse_tokens(
            "# comment\nsecret1,alice,1,\"dev,ops\"\nsecret2,bob,2\n",
            "f",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret1".parse().unwrap());
        let u = a.authenticate(&h, None).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, vec!["dev", "ops", "system:authenticated"]);
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(a.authenticate(&h, None).is_none());
        assert!(Authenticator::parse_tokens("onlytoken\n", "f").is_err());
    }
}
