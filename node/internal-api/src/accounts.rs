//! Users, robot accounts, groups and permission rules as the internal API carries them (the
//! node stores and enforces them; the `berth` CLI and the admin sidecar manage them), and the
//! audit events the node records.
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/internal/v1/accounts` | → [`Accounts`] (no password hashes, no secrets) |
//! | PUT | `/internal/v1/users/<name>` | [`SetPassword`] → 204 (creates or changes) |
//! | DELETE | `/internal/v1/users/<name>` | → 204 |
//! | POST | `/internal/v1/robots` | [`NewRobot`] → [`CreatedRobot`] (the secret, once) |
//! | DELETE | `/internal/v1/robots/<name>` | → 204 (revoked at once) |
//! | PUT | `/internal/v1/groups/<name>` | [`GroupSpec`] → 204 |
//! | DELETE | `/internal/v1/groups/<name>` | → 204 |
//! | PUT | `/internal/v1/rules` | `[`[`Rule`]`]` → 204 (replaces the managed rules) |
//! | GET | `/internal/v1/audit?from=N&limit=M` | → [`AuditPage`] |

use serde::{Deserialize, Serialize};

/// Robots log in as `robot$<name>` (the Harbor convention docker users know).
pub const ROBOT_PREFIX: &str = "robot$";

/// Whether a rule grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grant the actions.
    #[default]
    Allow,
    /// Refuse them (earlier rules still win).
    Deny,
}

/// One permission rule (`[[auth.rules]]` in the node's configuration, or managed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `user:<name>`, `robot:<name>`, `group:<name>`, `anonymous`, `authenticated`, `*`.
    pub subjects: Vec<String>,
    /// Repository globs: `*` stays within one path segment, `**` crosses them (`team/**`).
    pub repositories: Vec<String>,
    /// `pull`, `push`, `delete`, or `*`.
    pub actions: Vec<String>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub effect: Effect,
}

/// A group (`[[auth.groups]]`, or managed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name, used as `group:<name>` in rules.
    pub name: String,
    /// User names (robots as `robot$name`).
    pub members: Vec<String>,
}

/// Members of a group being set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// User names (robots as `robot$name`).
    pub members: Vec<String>,
}

/// A password being set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The password (at most 72 bytes: bcrypt ignores the rest).
    pub password: String,
}

/// A robot being created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRobot {
    /// Name (letters, digits, `.`, `_`, `-`); it logs in as `robot$<name>`.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Lifetime in seconds; none: until revoked.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A robot just created: its secret is shown this once and stored only as a hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedRobot {
    /// Its name.
    pub name: String,
    /// The user name it logs in with (`robot$<name>`).
    pub login: String,
    /// The secret (its password).
    pub secret: String,
    /// When it expires (unix ms).
    pub expires_at_ms: Option<u64>,
}

/// Where a user is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The htpasswd file or `[[auth.users]]`: edited there, not through the API.
    Config,
    /// Created through the API (or the CLI).
    Managed,
}

/// A user, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Name.
    pub name: String,
    /// Where it is defined.
    pub source: Source,
    /// Groups it belongs to.
    pub groups: Vec<String>,
}

/// A robot, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotInfo {
    /// Name (logs in as `robot$<name>`).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Created (unix ms).
    pub created_at_ms: u64,
    /// Expires (unix ms).
    pub expires_at_ms: Option<u64>,
}

/// Everything the node knows about who may do what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounts {
    /// Users (configured and managed).
    pub users: Vec<UserInfo>,
    /// Robot accounts.
    pub robots: Vec<RobotInfo>,
    /// Groups (configured and managed).
    pub groups: Vec<Group>,
    /// Rules from the configuration, evaluated first.
    pub config_rules: Vec<Rule>,
    /// Managed rules, evaluated after the configured ones.
    pub rules: Vec<Rule>,
}

/// One audit event: a denial, a failed login, a change to users, robots, groups or rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Sequence number on this node (increasing; restarts from 1 when the node restarts, with
    /// a new `epoch`).
    pub seq: u64,
    /// When (unix ms).
    pub at_ms: u64,
    /// `denied`, `login_failed`, `token_refused`, `user_set`, `user_deleted`, `robot_created`,
    /// `robot_deleted`, `group_set`, `group_deleted`, `rules_set`.
    pub event: String,
    /// Who did it (user name, `-` anonymous, `internal` for the internal API).
    pub actor: String,
    /// What it concerned (a scope, a user or robot name, a group).
    pub subject: String,
    /// Client address, when known.
    pub peer: Option<String>,
    /// How many occurrences this record stands for: repeated denials (same event, actor,
    /// subject and address) are aggregated per window instead of recorded one by one.
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// A page of audit events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    /// Identifies this run of the node: sequence numbers restart with a new epoch.
    pub epoch: String,
    /// The oldest sequence number still held (older ones were dropped: the ring is bounded).
    pub first: u64,
    /// Events from the requested sequence on.
    pub events: Vec<AuditEvent>,
    /// Occurrences lost since the node started, by class: `denials` (aggregated denials pushed
    /// out of the ring by newer ones) and `security` (logins, failures, account and rule
    /// changes: only when the ring holds nothing else). Also in
    /// `berth_audit_events_dropped{class}` and, on the sidecar, as `audit_events_dropped` rows.
    #[serde(default)]
    pub dropped_denials: u64,
    /// See `dropped_denials`.
    #[serde(default)]
    pub dropped_security: u64,
}

/// Whether `name` is acceptable for a user, robot or group: not empty, at most 128 bytes, no
/// `:` (the Basic separator), no whitespace or control characters, and nothing that means
/// something in a URL path (`/`, `\\`, `%`, `?`, `#`, or a name that is only dots): a name is
/// pasted into internal API paths and must stay one segment.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.chars().all(|c| c == '.')
        && !name.chars().any(|c| matches!(c, ':' | '/' | '\\' | '%' | '?' | '#') || c.is_whitespace() || c.is_control())
}

/// A user, robot or group name parsed at the edge (see [`valid_name`]): safe to put into one
/// path segment of an internal API URL as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountName(String);

impl AccountName {
    /// The name, if [`valid_name`] accepts it.
    pub fn parse(name: &str) -> Result<AccountName, String> {
        if valid_name(name) {
            Ok(AccountName(name.to_owned()))
        } else {
            Err(format!(
                "invalid account name {name:?}: 1-128 characters, none of : / \\ % ? # or whitespace, not only dots"
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("alice") && super::valid_name("ci.bot-1_x"));
        assert!(!super::valid_name("") && !super::valid_name("a:b") && !super::valid_name("a b"));
        for hostile in ["..", ".", "...", "a/b", "..%2Fscans", "a\\b", "a?b", "a#b", "%2e%2e"] {
            assert!(!super::valid_name(hostile), "{hostile:?} must be refused");
            assert!(super::AccountName::parse(hostile).is_err());
        }
        assert_eq!(super::AccountName::parse("robot$ci").unwrap().as_str(), "robot$ci");
    }
}
