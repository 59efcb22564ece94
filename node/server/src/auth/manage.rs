//! Changes to managed users, robots, groups and rules (the internal API's account endpoints):
//! validated, written durably, applied at once (cached verifications dropped), audited.

use berth_internal_api::accounts::{
    valid_name, Accounts, CreatedRobot, Group, NewRobot, RobotInfo, Rule, Source, UserInfo, ROBOT_PREFIX,
};

use super::accounts::{hash_secret, new_secret, now_ms, StoredRobot, StoredUser};
use super::passwords::MAX_PASSWORD_BYTES;
use super::Auth;

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    /// Malformed (400).
    Invalid(String),
    /// Exists, or defined in the configuration (409).
    Conflict(String),
    /// No such account (404).
    NotFound(String),
    /// Busy (429): too many password hashes queued.
    Busy,
    /// Could not be stored (500).
    Io(String),
    /// The cluster's change log is unreachable (503): nothing changed.
    Unavailable(String),
}

impl AccountError {
    /// HTTP status and message.
    pub fn status(&self) -> (u16, String) {
        match self {
            AccountError::Invalid(m) => (400, m.clone()),
            AccountError::Conflict(m) => (409, m.clone()),
            AccountError::NotFound(m) => (404, m.clone()),
            AccountError::Busy => (429, "too many password operations queued; retry".into()),
            AccountError::Io(m) => (500, m.clone()),
            AccountError::Unavailable(m) => (503, format!("the cluster's change log is unreachable ({m}); retry")),
        }
    }
}

fn check_name(name: &str, what: &str) -> Result<(), AccountError> {
    if valid_name(name) && !name.starts_with(ROBOT_PREFIX) {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "{what} name {name:?}: use 1-128 characters without ':', '/', whitespace or the robot$ prefix"
        )))
    }
}

impl Auth {
    /// Install managed accounts committed to the cluster's change log (by any node).
    pub fn install_managed(&self, stored: super::accounts::Stored) -> Result<(), AccountError> {
        self.managed.install(stored).map_err(AccountError::Io)?;
        self.apply_current()
    }

    fn configured(&self) -> crate::config::AuthConfig {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_configured_user(&self, name: &str) -> bool {
        let cfg = self.configured();
        cfg.users.iter().any(|u| u.name == name)
            || cfg.htpasswd.as_ref().is_some_and(|p| {
                std::fs::read_to_string(p)
                    .map(|t| t.lines().any(|l| l.split_once(':').is_some_and(|(u, _)| u.trim() == name)))
                    .unwrap_or(false)
            })
    }

    /// Everything known about accounts (no hashes, no secrets).
    pub fn accounts(&self) -> Accounts {
        let cfg = self.configured();
        let stored = self.managed.get();
        let policy_groups: Vec<Group> = cfg
            .groups
            .iter()
            .cloned()
            .chain(stored.groups.iter().map(|(n, m)| Group { name: n.clone(), members: m.clone() }))
            .collect();
        let groups_of = |user: &str| -> Vec<String> {
            policy_groups.iter().filter(|g| g.members.iter().any(|m| m == user)).map(|g| g.name.clone()).collect()
        };
        let mut users: Vec<UserInfo> = Vec::new();
        let mut config_names: Vec<String> = cfg.users.iter().map(|u| u.name.clone()).collect();
        if let Some(Ok(text)) = cfg.htpasswd.as_ref().map(std::fs::read_to_string) {
            config_names.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .filter_map(|l| l.split_once(':').map(|(u, _)| u.trim().to_owned())),
            );
        }
        config_names.sort();
        config_names.dedup();
        for n in config_names {
            users.push(UserInfo { groups: groups_of(&n), name: n, source: Source::Config });
        }
        for n in stored.users.keys() {
            users.push(UserInfo { name: n.clone(), source: Source::Managed, groups: groups_of(n) });
        }
        let robots = stored
            .robots
            .iter()
            .map(|(n, r)| RobotInfo {
                name: n.clone(),
                description: r.description.clone(),
                created_at_ms: r.created_at_ms,
                expires_at_ms: r.expires_at_ms,
            })
            .collect();
        Accounts { users, robots, groups: policy_groups, config_rules: cfg.rules.clone(), rules: stored.rules.clone() }
    }

    /// Create a managed user or change its password.
    pub async fn set_user(&self, name: &str, password: &str, actor: &str) -> Result<(), AccountError> {
        check_name(name, "user")?;
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(AccountError::Invalid(format!(
                "the password must be 1-{MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)"
            )));
        }
        if self.is_configured_user(name) {
            return Err(AccountError::Conflict(format!(
                "user {name:?} is defined in the configuration (htpasswd or [[auth.users]]); change it there"
            )));
        }
        let hash = self.passwords.hash(password).await.ok_or(AccountError::Busy)?;
        if hash.is_empty() {
            return Err(AccountError::Invalid("bcrypt refused the password".into()));
        }
        self.managed
            .update(|s| {
                let created_at_ms = s.users.get(name).map_or_else(now_ms, |u| u.created_at_ms);
                s.users.insert(name.to_owned(), StoredUser { bcrypt: hash.clone(), created_at_ms });
                Ok(())
            })
            .map_err(|e| e.or(AccountError::Io))?;
        self.apply_current()?;
        self.audit.record("user_set", actor, name, None);
        Ok(())
    }

    /// Delete a managed user (its cached logins stop working at once).
    pub fn delete_user(&self, name: &str, actor: &str) -> Result<(), AccountError> {
        if self.is_configured_user(name) {
            return Err(AccountError::Conflict(format!(
                "user {name:?} is defined in the configuration; remove it there"
            )));
        }
        self.managed
            .update(|s| s.users.remove(name).map(|_| ()).ok_or_else(|| format!("no managed user {name:?}")))
            .map_err(|e| e.or(AccountError::NotFound))?;
        self.apply_current()?;
        self.audit.record("user_deleted", actor, name, None);
        Ok(())
    }

    /// Create a robot; its secret is returned this once.
    pub fn create_robot(&self, r: &NewRobot, actor: &str) -> Result<CreatedRobot, AccountError> {
        check_name(&r.name, "robot")?;
        let secret = new_secret();
        let expires_at_ms = r.expires_in_secs.map(|s| now_ms().saturating_add(s.saturating_mul(1000)));
        let robot = StoredRobot {
            secret_sha256: hash_secret(&secret),
            description: r.description.clone(),
            created_at_ms: now_ms(),
            expires_at_ms,
        };
        self.managed
            .update(|s| {
                if s.robots.contains_key(&r.name) {
                    return Err(format!("robot {:?} exists; delete it first to issue a new secret", r.name));
                }
                s.robots.insert(r.name.clone(), robot.clone());
                Ok(())
            })
            .map_err(|e| e.or(AccountError::Conflict))?;
        self.apply_current()?;
        self.audit.record("robot_created", actor, &r.name, None);
        Ok(CreatedRobot { name: r.name.clone(), login: format!("{ROBOT_PREFIX}{}", r.name), secret, expires_at_ms })
    }

    /// Revoke a robot.
    pub fn delete_robot(&self, name: &str, actor: &str) -> Result<(), AccountError> {
        self.managed
            .update(|s| s.robots.remove(name).map(|_| ()).ok_or_else(|| format!("no robot {name:?}")))
            .map_err(|e| e.or(AccountError::NotFound))?;
        self.apply_current()?;
        self.audit.record("robot_deleted", actor, name, None);
        Ok(())
    }

    /// Create or replace a managed group.
    pub fn set_group(&self, name: &str, members: Vec<String>, actor: &str) -> Result<(), AccountError> {
        check_name(name, "group")?;
        if self.configured().groups.iter().any(|g| g.name == name) {
            return Err(AccountError::Conflict(format!("group {name:?} is defined in the configuration")));
        }
        self.managed
            .update(|s| {
                s.groups.insert(name.to_owned(), members.clone());
                Ok(())
            })
            .map_err(|e| e.or(AccountError::Io))?;
        self.apply_current()?;
        self.audit.record("group_set", actor, name, None);
        Ok(())
    }

    /// Delete a managed group.
    pub fn delete_group(&self, name: &str, actor: &str) -> Result<(), AccountError> {
        self.managed
            .update(|s| s.groups.remove(name).map(|_| ()).ok_or_else(|| format!("no managed group {name:?}")))
            .map_err(|e| e.or(AccountError::NotFound))?;
        self.apply_current()?;
        self.audit.record("group_deleted", actor, name, None);
        Ok(())
    }

    /// Replace the managed rules (checked before anything is stored).
    pub fn set_rules(&self, rules: Vec<Rule>, actor: &str) -> Result<(), AccountError> {
        let mut probe = (*self.managed.get()).clone();
        probe.rules = rules.clone();
        super::compile_policy(&self.configured(), &probe).map_err(AccountError::Invalid)?;
        let n = rules.len();
        self.managed
            .update(|s| {
                s.rules = rules.clone();
                Ok(())
            })
            .map_err(|e| e.or(AccountError::Io))?;
        self.apply_current()?;
        self.audit.record("rules_set", actor, &format!("{n} rules"), None);
        Ok(())
    }
}
