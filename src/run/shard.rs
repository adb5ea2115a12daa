//! Splitting a run over machines: `--shard i/n` runs a contiguous block of the groups.
//!
//! Group `g` always has seed `--seed + g` and its own noise streams, so a group's samples do
//! not depend on which other groups run beside it: the shards of a run, merged with
//! `steerdiff merge`, give the same images and record as the run in one piece. Shard `i` of
//! `n` takes groups `⌊N·i/n⌋ .. ⌊N·(i+1)/n⌋` of the `N = -n` groups.
//!
//! Without `--shard`, job-array environments choose it: Slurm's `SLURM_ARRAY_TASK_ID` (less
//! `SLURM_ARRAY_TASK_MIN`) of `SLURM_ARRAY_TASK_COUNT`, or a Kubernetes Indexed Job's
//! `JOB_COMPLETION_INDEX` of `STEERDIFF_SHARD_COUNT` (Kubernetes does not tell a pod the
//! number of completions; set it in the manifest — without it the index is ignored).

use serde::{Deserialize, Serialize};

/// One shard of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` (`0 ≤ I < N`).
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard expects I/N with 0 ≤ I < N, e.g. 0/4; got `{s}`");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard a job array assigns through `var` (see the module docs), if any.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Shard, String)>, String> {
        let num = |name: &str| -> Result<Option<usize>, String> {
            match var(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}=`{v}` is not a whole number")),
            }
        };
        if let (Some(id), Some(count)) =
            (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?)
        {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).filter(|&i| i < count).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID={id} is outside {min}..{min}+{count}")
            })?;
            return Ok(Some((Shard { index, count }, "SLURM_ARRAY_TASK_ID".into())));
        }
        // An Indexed Job's index alone says nothing about the split (and is set for every
        // Indexed Job, sharded or not): it counts only with STEERDIFF_SHARD_COUNT.
        if let (Some(index), Some(count)) =
            (num("JOB_COMPLETION_INDEX")?, num("STEERDIFF_SHARD_COUNT")?)
        {
            if index >= count {
                return Err(format!(
                    "JOB_COMPLETION_INDEX={index} is not below STEERDIFF_SHARD_COUNT={count}"
                ));
            }
            return Ok(Some((
                Shard { index, count },
                "JOB_COMPLETION_INDEX".into(),
            )));
        }
        Ok(None)
    }

    /// The groups of a run of `n` groups this shard runs.
    pub fn groups(&self, n: usize) -> std::ops::Range<usize> {
        n * self.index / self.count..n * (self.index + 1) / self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_group_once() {
        for n in [1, 5, 16] {
            for count in 1..=6 {
                let mut all = vec![];
                for index in 0..count {
                    all.extend(Shard { index, count }.groups(n));
                }
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} count {count}");
            }
        }
        assert_eq!(Shard::parse("1/2"), Ok(Shard { index: 1, count: 2 }));
        assert!(Shard::parse("2/2").is_err() && Shard::parse("x").is_err());
    }

    #[test]
    fn job_arrays_choose_the_shard() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::from_env(slurm).unwrap().unwrap().0,
            Shard { index: 2, count: 4 }
        );
        let k8s = env(&[
            ("JOB_COMPLETION_INDEX", "1"),
            ("STEERDIFF_SHARD_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::from_env(k8s).unwrap().unwrap().0,
            Shard { index: 1, count: 3 }
        );
        assert_eq!(
            Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap(),
            None
        );
        assert!(Shard::from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "2")
        ]))
        .is_err());
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
    }
}
