//! Who may do what to which repository: ordered rules of (subjects, repository globs, actions,
//! allow or deny). For each action the first rule that matches the caller and the repository
//! decides; no matching rule denies.
//!
//! ```toml
//! [[auth.groups]]
//! name = "ci"
//! members = ["jenkins", "robot$deployer"]
//!
//! [[auth.rules]]
//! subjects = ["group:ci"]
//! repositories = ["apps/**"]
//! actions = ["pull", "push"]
//!
//! [[auth.rules]]
//! subjects = ["anonymous"]
//! repositories = ["public/**"]
//! actions = ["pull"]
//! ```
//!
//! With no rules at all, every authenticated caller may do everything, and anonymous callers
//! may pull when `auth.anonymous_pull` is set (Berth's behaviour before rules existed).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags, referrers, scan results.
    Pull,
    /// Upload blobs, put manifests and tags (creates the repository).
    Push,
    /// Delete manifests, tags, blobs.
    Delete,
}

impl Action {
    /// All actions.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// As in token scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// From a token scope's action (`*` is handled by the caller).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Every action.
    pub const ALL: Actions = Actions(7);

    /// Whether `a` is in the set.
    pub fn has(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// The set with `a` added.
    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | a.bit())
    }

    /// Both sets' actions.
    pub fn intersect(self, o: Actions) -> Actions {
        Actions(self.0 & o.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Names, in scope order (`pull`, `push`, `delete`).
    pub fn names(self) -> Vec<&'static str> {
        Action::ALL.into_iter().filter(|a| self.has(*a)).map(Action::as_str).collect()
    }

    /// From names; `*` means all. Unknown names are ignored (a token request may ask for
    /// actions this registry does not know).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Actions {
        names.into_iter().fold(Actions::NONE, |acc, n| match n {
            "*" => Actions::ALL,
            n => Action::parse(n).map_or(acc, |a| acc.with(a)),
        })
    }
}

/// Who is asking, as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// A user (password or certificate) or a robot (`robot$name`).
    Named(String),
}

impl Caller {
    /// The name, for logs (`-` when anonymous).
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "-",
            Caller::Named(n) => n,
        }
    }
}

pub use berth_internal_api::accounts::{Effect, Group as GroupConfig, Rule as RuleConfig};

#[derive(Debug, Clone)]
enum Subject {
    Named(String),
    Group(String),
    Anonymous,
    Authenticated,
    Everyone,
}

#[derive(Debug, Clone)]
struct Rule {
    subjects: Vec<Subject>,
    repositories: Vec<glob::Pattern>,
    actions: Actions,
    effect: Effect,
}

/// Compiled rules and groups.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    /// member → groups.
    groups: HashMap<String, Vec<String>>,
}

const GLOB: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

impl Policy {
    /// Compile rules and groups; `anonymous_pull` adds a last rule letting anyone pull. With no
    /// rules, authenticated callers may do everything.
    pub fn compile(rules: &[RuleConfig], groups: &[GroupConfig], anonymous_pull: bool) -> Result<Policy, String> {
        Self::compile_all(&[("auth.rules", rules)], groups, anonymous_pull)
    }

    /// `compile` of several rule lists in order (configured rules, then managed ones), each
    /// named in errors.
    pub fn compile_all(
        lists: &[(&str, &[RuleConfig])],
        groups: &[GroupConfig],
        anonymous_pull: bool,
    ) -> Result<Policy, String> {
        let rules: Vec<(&str, usize, &RuleConfig)> =
            lists.iter().flat_map(|(name, l)| l.iter().enumerate().map(move |(i, r)| (*name, i, r))).collect();
        let mut out = Vec::with_capacity(rules.len() + 2);
        for &(list, i, r) in &rules {
            let at = |m: String| format!("{list}[{i}]: {m}");
            let subjects = r.subjects.iter().map(|s| parse_subject(s).map_err(at)).collect::<Result<Vec<_>, _>>()?;
            let repositories = r
                .repositories
                .iter()
                .map(|p| glob::Pattern::new(p).map_err(|e| at(format!("repository pattern {p:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            for a in &r.actions {
                if a != "*" && Action::parse(a).is_none() {
                    return Err(at(format!("unknown action {a:?} (pull, push, delete or *)")));
                }
            }
            if subjects.is_empty() || repositories.is_empty() || r.actions.is_empty() {
                return Err(at("subjects, repositories and actions must not be empty".into()));
            }
            out.push(Rule {
                subjects,
                repositories,
                actions: Actions::from_names(r.actions.iter().map(String::as_str)),
                effect: r.effect,
            });
        }
        let all = || vec![glob::Pattern::new("**").expect("valid pattern")];
        if rules.is_empty() {
            out.push(Rule {
                subjects: vec![Subject::Authenticated],
                repositories: all(),
                actions: Actions::ALL,
                effect: Effect::Allow,
            });
        }
        if anonymous_pull {
            out.push(Rule {
                subjects: vec![Subject::Everyone],
                repositories: all(),
                actions: Actions::NONE.with(Action::Pull),
                effect: Effect::Allow,
            });
        }
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for g in groups {
            for m in &g.members {
                members.entry(m.clone()).or_default().push(g.name.clone());
            }
        }
        Ok(Policy { rules: out, groups: members })
    }

    /// The actions `caller` may take on `repo`.
    pub fn allowed(&self, caller: &Caller, repo: &str) -> Actions {
        let own = self.allowed_as(caller, repo);
        match caller {
            // Logging in never takes away what an anonymous caller may do (a client would only
            // have to drop its credentials to get it back).
            Caller::Named(_) => Actions(own.0 | self.allowed_as(&Caller::Anonymous, repo).0),
            Caller::Anonymous => own,
        }
    }

    fn allowed_as(&self, caller: &Caller, repo: &str) -> Actions {
        let mut granted = Actions::NONE;
        let mut decided = Actions::NONE;
        for rule in &self.rules {
            if decided == Actions::ALL {
                break;
            }
            let fresh = Actions(rule.actions.0 & !decided.0);
            if fresh.is_empty()
                || !rule.subjects.iter().any(|s| self.matches(s, caller))
                || !rule.repositories.iter().any(|p| p.matches_with(repo, GLOB))
            {
                continue;
            }
            decided = Actions(decided.0 | fresh.0);
            if rule.effect == Effect::Allow {
                granted = Actions(granted.0 | fresh.0);
            }
        }
        granted
    }

    /// Whether `caller` is named by any allow rule for some repository (the catalog is open to
    /// anonymous callers only then).
    pub fn grants_anything(&self, caller: &Caller) -> bool {
        self.rules.iter().any(|r| r.effect == Effect::Allow && r.subjects.iter().any(|s| self.matches(s, caller)))
    }

    fn matches(&self, s: &Subject, caller: &Caller) -> bool {
        match (s, caller) {
            (Subject::Everyone, _) => true,
            (Subject::Anonymous, Caller::Anonymous) => true,
            (Subject::Authenticated, Caller::Named(_)) => true,
            (Subject::Named(n), Caller::Named(c)) => n == c,
            (Subject::Group(g), Caller::Named(c)) => self.groups.get(c).is_some_and(|gs| gs.contains(g)),
            _ => false,
        }
    }
}

fn parse_subject(s: &str) -> Result<Subject, String> {
    Ok(match s {
        "*" => Subject::Everyone,
        "anonymous" => Subject::Anonymous,
        "authenticated" => Subject::Authenticated,
        _ => match s.split_once(':') {
            Some(("user", n)) if !n.is_empty() => Subject::Named(n.to_owned()),
            Some(("robot", n)) if !n.is_empty() => Subject::Named(format!("robot${n}")),
            Some(("group", n)) if !n.is_empty() => Subject::Group(n.to_owned()),
            _ => {
                return Err(format!(
                    "subject {s:?} is not user:<name>, robot:<name>, group:<name>, anonymous, authenticated or *"
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subjects: &[&str], repos: &[&str], actions: &[&str], effect: Effect) -> RuleConfig {
        RuleConfig {
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            effect,
        }
    }

    #[test]
    fn first_matching_rule_decides_per_action() {
        let p = Policy::compile(
            &[
                rule(&["user:eve"], &["**"], &["push", "delete"], Effect::Deny),
                rule(&["group:dev"], &["apps/*"], &["*"], Effect::Allow),
                rule(&["anonymous"], &["public/**"], &["pull"], Effect::Allow),
                rule(&["robot:ci"], &["apps/web"], &["pull", "push"], Effect::Allow),
            ],
            &[GroupConfig { name: "dev".into(), members: vec!["alice".into(), "eve".into()] }],
            false,
        )
        .unwrap();
        let alice = Caller::Named("alice".into());
        let eve = Caller::Named("eve".into());
        assert_eq!(p.allowed(&alice, "apps/web"), Actions::ALL);
        assert_eq!(p.allowed(&alice, "apps/web/sub"), Actions::NONE, "* stays in one segment");
        assert_eq!(p.allowed(&eve, "apps/web").names(), vec!["pull"]);
        assert_eq!(p.allowed(&Caller::Anonymous, "public/a/b").names(), vec!["pull"]);
        assert_eq!(p.allowed(&Caller::Anonymous, "apps/web"), Actions::NONE);
        assert_eq!(p.allowed(&Caller::Named("robot$ci".into()), "apps/web").names(), vec!["pull", "push"]);
        assert_eq!(p.allowed(&Caller::Named("bob".into()), "apps/web"), Actions::NONE);
        assert!(p.grants_anything(&Caller::Anonymous));
    }

    #[test]
    fn defaults_without_rules() {
        let p = Policy::compile(&[], &[], false).unwrap();
        assert_eq!(p.allowed(&Caller::Named("x".into()), "a/b"), Actions::ALL);
        assert_eq!(p.allowed(&Caller::Anonymous, "a"), Actions::NONE);
        assert!(!p.grants_anything(&Caller::Anonymous));
        let p = Policy::compile(&[], &[], true).unwrap();
        assert_eq!(p.allowed(&Caller::Anonymous, "a/b/c").names(), vec!["pull"]);
    }

    #[test]
    fn bad_rules_are_named() {
        let e = Policy::compile(&[rule(&["role:x"], &["**"], &["pull"], Effect::Allow)], &[], false).unwrap_err();
        assert!(e.contains("auth.rules[0]") && e.contains("role:x"), "{e}");
        let e = Policy::compile(&[rule(&["*"], &["**"], &["write"], Effect::Allow)], &[], false).unwrap_err();
        assert!(e.contains("write"), "{e}");
    }
}
