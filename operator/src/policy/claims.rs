//! Which metrics each MetricPolicy of a stack claims, and who wins a metric claimed twice.
//!
//! Precedence, the same whichever policy is reconciled: a policy naming the metric exactly
//! beats a regex; then the older policy; then the alphabetically first name.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use promscale_crds::policy::{MetricSelector, PolicyConflict};
use regex::Regex;

/// Conflicts listed in a policy's status at most; the condition message counts them all.
pub const MAX_LISTED_CONFLICTS: usize = 20;

pub struct Selector {
    names: BTreeSet<String>,
    regex: Option<Regex>,
}

impl Selector {
    /// The regex is anchored at both ends, as PromQL's `=~` is.
    pub fn new(spec: &MetricSelector) -> Result<Self, regex::Error> {
        let regex = spec
            .regex
            .as_deref()
            .map(|r| Regex::new(&format!("^(?:{r})$")))
            .transpose()?;
        Ok(Selector {
            names: spec.names.iter().cloned().collect(),
            regex,
        })
    }

    fn claim(&self, metric: &str) -> Option<Strength> {
        if self.names.contains(metric) {
            Some(Strength::Exact)
        } else if self.regex.as_ref().is_some_and(|r| r.is_match(metric)) {
            Some(Strength::Regex)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    Exact,
    Regex,
}

/// A policy of the stack, as far as claiming goes.
pub struct Claimant {
    pub name: String,
    pub created: Option<Timestamp>,
    pub selector: Selector,
}

#[derive(Debug, Default, PartialEq)]
pub struct Claims {
    /// Metrics whose settings are this policy's to apply.
    pub won: Vec<String>,
    /// Names the policy lists that the database does not hold yet.
    pub pending: Vec<String>,
    /// Metrics this policy claims that others claim too (all of them; cut for the status).
    pub conflicts: Vec<PolicyConflict>,
}

/// What `me` (one of `policies`) gets of `metrics` (every metric in the database).
pub fn resolve(me: &str, policies: &[Claimant], metrics: &[String]) -> Claims {
    let Some(mine) = policies.iter().find(|p| p.name == me) else {
        return Claims::default();
    };
    let mut claims = Claims::default();
    for metric in metrics {
        if mine.selector.claim(metric).is_none() {
            continue;
        }
        let mut rivals: Vec<(Strength, Option<Timestamp>, &str)> = policies
            .iter()
            .filter_map(|p| p.selector.claim(metric).map(|s| (s, p.created, p.name.as_str())))
            .collect();
        // Oldest first; a policy without a creation time (not yet stored) sorts last.
        rivals.sort_by(|a, b| (a.0, a.1.is_none(), a.1, a.2).cmp(&(b.0, b.1.is_none(), b.1, b.2)));
        let winner = rivals[0].2;
        if winner == me {
            claims.won.push(metric.clone());
        }
        if rivals.len() > 1 {
            let mut names: Vec<String> = rivals.iter().map(|r| r.2.to_string()).collect();
            names.sort();
            claims.conflicts.push(PolicyConflict {
                metric: metric.clone(),
                policies: names,
                winner: winner.to_string(),
            });
        }
    }
    let existing: BTreeSet<&str> = metrics.iter().map(String::as_str).collect();
    claims.pending = mine
        .selector
        .names
        .iter()
        .filter(|n| !existing.contains(n.as_str()))
        .cloned()
        .collect();
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(name: &str, created: i64, names: &[&str], regex: Option<&str>) -> Claimant {
        Claimant {
            name: name.into(),
            created: Some(Timestamp::from_second(created).unwrap()),
            selector: Selector::new(&MetricSelector {
                names: names.iter().map(|s| s.to_string()).collect(),
                regex: regex.map(String::from),
            })
            .unwrap(),
        }
    }

    fn metrics(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn regex_is_anchored_like_promql() {
        let policies = [claimant("debug", 1, &[], Some("debug_.*"))];
        let all = metrics(&["debug_queue_depth", "app_debug_x", "debug_"]);
        assert_eq!(
            resolve("debug", &policies, &all).won,
            metrics(&["debug_queue_depth", "debug_"])
        );
    }

    #[test]
    fn exact_names_beat_regexes_then_age_then_name_and_both_sides_see_the_conflict() {
        let policies = [
            claimant("broad", 1, &[], Some("http_.*")),
            claimant("exact", 5, &["http_requests_total"], None),
            claimant("young", 9, &[], Some("http_.*|node_.*")),
            claimant("twin", 9, &[], Some("node_.*")),
        ];
        let all = metrics(&["http_requests_total", "http_errors_total", "node_load1"]);

        let exact = resolve("exact", &policies, &all);
        assert_eq!(exact.won, metrics(&["http_requests_total"]));
        let broad = resolve("broad", &policies, &all);
        assert_eq!(broad.won, metrics(&["http_errors_total"]));
        assert_eq!(broad.conflicts.len(), 2);
        assert_eq!(broad.conflicts[0].winner, "exact");
        assert_eq!(broad.conflicts[0].policies, vec!["broad", "exact", "young"]);

        // Same age: the alphabetically first wins.
        assert_eq!(resolve("twin", &policies, &all).won, metrics(&["node_load1"]));
        assert!(resolve("young", &policies, &all).won.is_empty());
        assert_eq!(resolve("young", &policies, &all).conflicts.len(), 3);
    }

    #[test]
    fn names_not_in_the_database_are_pending() {
        let policies = [claimant("p", 1, &["up", "not_yet_written"], None)];
        let claims = resolve("p", &policies, &metrics(&["up", "other"]));
        assert_eq!(claims.won, metrics(&["up"]));
        assert_eq!(claims.pending, metrics(&["not_yet_written"]));
        assert!(claims.conflicts.is_empty());
    }
}
