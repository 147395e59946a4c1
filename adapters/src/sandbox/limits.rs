//! The operator's ceilings on what one task may ask of its sandbox (`[topics.NAME.settings.limits]`),
//! and the guards a task runs under: the topic's `sandbox` guards, with the task's
//! `procos.timeout`, `procos.memory_mb` and `procos.cpus` in their place, each within its
//! ceiling.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::SETTING_PREFIX as PREFIX;
use crate::{Failure, Guards, Retry, TaskSettings};

/// The least a task may ask for: below it a sandbox cannot run (Docker refuses fewer than 0.01
/// CPUs; less than 8 MiB does not start a process).
const MIN_MEMORY_MB: u64 = 8;
const MIN_CPUS: f64 = 0.01;

/// `[topics.NAME.settings.limits]`: the most a task may ask for with its per-task settings.
/// The topic's own `sandbox` guards must be within them too (a worker refuses to start
/// otherwise), so a task that sets nothing always runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The longest wall-clock limit a task may ask for (`procos.timeout`).
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
    /// The most memory in MiB a task may ask for (`procos.memory_mb`).
    pub max_memory_mb: u64,
    /// The most CPU cores a task may ask for (`procos.cpus`).
    pub max_cpus: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_timeout: Duration::from_secs(30 * 60),
            max_memory_mb: 2048,
            max_cpus: 2.0,
        }
    }
}

/// A duration shown as `90s` or `30m` in messages, and compared as a duration.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Shown(Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Limits {
    /// Refuses ceilings that cannot hold a sandbox, and a topic whose own guards are above its
    /// ceilings (the operator would be refusing the topic's own defaults).
    pub(crate) fn check(&self, guards: &Guards) -> Result<(), String> {
        if self.max_timeout.is_zero() {
            return Err("limits.max_timeout must be more than 0s".into());
        }
        if self.max_memory_mb < MIN_MEMORY_MB {
            return Err(format!(
                "limits.max_memory_mb must be at least {MIN_MEMORY_MB}"
            ));
        }
        if !self.max_cpus.is_finite() || self.max_cpus < MIN_CPUS {
            return Err(format!("limits.max_cpus must be at least {MIN_CPUS}"));
        }
        let above = |guard: &str, value: String, limit: &str, ceiling: String| {
            Err(format!(
                "sandbox.{guard} = {value} is above limits.{limit} = {ceiling}: raise limits.{limit} or lower sandbox.{guard}"
            ))
        };
        if guards.timeout > self.max_timeout {
            return above(
                "timeout",
                Shown(guards.timeout).to_string(),
                "max_timeout",
                Shown(self.max_timeout).to_string(),
            );
        }
        if guards.memory_mb > self.max_memory_mb {
            return above(
                "memory_mb",
                guards.memory_mb.to_string(),
                "max_memory_mb",
                self.max_memory_mb.to_string(),
            );
        }
        if guards.cpus > self.max_cpus {
            return above(
                "cpus",
                guards.cpus.to_string(),
                "max_cpus",
                self.max_cpus.to_string(),
            );
        }
        Ok(())
    }

    /// The guards of one task: `topic`'s, with the task's `procos.timeout`, `procos.memory_mb`
    /// and `procos.cpus` in their place. A value above its ceiling, or too small to run, fails
    /// the task at once, naming the setting, the value and the bound.
    pub(crate) fn guards_for(
        &self,
        topic: &Guards,
        settings: &TaskSettings,
    ) -> Result<Guards, Failure> {
        let mut guards = topic.clone();
        if let Some(timeout) = settings.duration("timeout")? {
            let Shown(timeout) = settings.within(
                "timeout",
                Shown(timeout),
                Shown(self.max_timeout),
                "limits.max_timeout",
            )?;
            if timeout.is_zero() {
                return Err(too_small("timeout", "0s", "more than 0s"));
            }
            guards.timeout = timeout;
        }
        if let Some(memory_mb) = settings.u64("memory_mb")? {
            let memory_mb = settings.within(
                "memory_mb",
                memory_mb,
                self.max_memory_mb,
                "limits.max_memory_mb",
            )?;
            if memory_mb < MIN_MEMORY_MB {
                return Err(too_small(
                    "memory_mb",
                    &memory_mb.to_string(),
                    &format!("at least {MIN_MEMORY_MB}"),
                ));
            }
            guards.memory_mb = memory_mb;
        }
        if let Some(cpus) = settings.f64("cpus")? {
            let cpus = settings.within("cpus", cpus, self.max_cpus, "limits.max_cpus")?;
            if cpus < MIN_CPUS {
                return Err(too_small(
                    "cpus",
                    &cpus.to_string(),
                    &format!("at least {MIN_CPUS}"),
                ));
            }
            guards.cpus = cpus;
        }
        Ok(guards)
    }
}

fn too_small(name: &str, value: &str, wanted: &str) -> Failure {
    Failure::new(
        format!("the task's setting `{PREFIX}{name}` is {value}; it must be {wanted}"),
        format!(
            "Fix `{PREFIX}{name}` in the model, or leave it empty for the topic's own sandbox.{name}."
        ),
        Retry::Never,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings(pairs: serde_json::Value) -> TaskSettings {
        TaskSettings::from_pairs(pairs.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn a_task_sets_its_guards_within_the_ceilings() {
        let limits = Limits::default();
        let topic = Guards::default();
        assert_eq!(
            limits.guards_for(&topic, &TaskSettings::default()).unwrap(),
            topic,
            "nothing set: the topic's guards"
        );
        let guards = limits
            .guards_for(
                &topic,
                &settings(json!({"timeout": "90s", "memory_mb": "2048", "cpus": 0.5})),
            )
            .unwrap();
        assert_eq!(guards.timeout, Duration::from_secs(90));
        assert_eq!(guards.memory_mb, 2048);
        assert_eq!(guards.cpus, 0.5);
        assert_eq!(
            guards.pids_limit, topic.pids_limit,
            "the rest is the topic's"
        );
    }

    #[test]
    fn a_task_asking_for_more_than_a_ceiling_fails_at_once_naming_it() {
        let limits = Limits::default();
        let topic = Guards::default();
        for (asked, names) in [
            (
                json!({"memory_mb": 20480}),
                ["procos.memory_mb = 20480", "limits.max_memory_mb = 2048"],
            ),
            (
                json!({"timeout": "1h"}),
                ["procos.timeout = 1h", "limits.max_timeout = 30m"],
            ),
            (
                json!({"cpus": "4"}),
                ["procos.cpus = 4", "limits.max_cpus = 2"],
            ),
        ] {
            let failure = limits.guards_for(&topic, &settings(asked)).unwrap_err();
            assert_eq!(failure.retry, Retry::Never);
            for name in names {
                assert!(
                    failure.message.contains(name),
                    "{name}: {}",
                    failure.message
                );
            }
        }
        for (asked, name) in [
            (json!({"memory_mb": 4}), "procos.memory_mb"),
            (json!({"cpus": 0}), "procos.cpus"),
            (json!({"timeout": "0s"}), "procos.timeout"),
            (json!({"memory_mb": "lots"}), "procos.memory_mb"),
        ] {
            let failure = limits.guards_for(&topic, &settings(asked)).unwrap_err();
            assert_eq!(failure.retry, Retry::Never);
            assert!(failure.message.contains(name), "{}", failure.message);
        }
    }

    #[test]
    fn a_topic_whose_guards_pass_its_ceilings_is_refused() {
        let limits = Limits::default();
        assert!(limits.check(&Guards::default()).is_ok());
        let greedy = Guards {
            memory_mb: 4096,
            ..Guards::default()
        };
        let refused = limits.check(&greedy).unwrap_err();
        assert!(
            refused.contains("sandbox.memory_mb = 4096 is above limits.max_memory_mb = 2048"),
            "{refused}"
        );
        let slow = Guards {
            timeout: Duration::from_secs(3600),
            ..Guards::default()
        };
        assert!(
            limits
                .check(&slow)
                .unwrap_err()
                .contains("limits.max_timeout = 30m")
        );
        let zero = Limits {
            max_cpus: 0.0,
            ..Limits::default()
        };
        assert!(zero.check(&Guards::default()).is_err());
        let parsed: Limits = serde_json::from_value(json!({"max_timeout": "2h"})).unwrap();
        assert_eq!(parsed.max_timeout, Duration::from_secs(7200));
        assert_eq!(parsed.max_memory_mb, 2048);
        assert!(serde_json::from_value::<Limits>(json!({"max_memory": 1})).is_err());
    }
}
