//! Which container images ProcOS may run: `[worker] allowed_images` for the worker's sandboxes,
//! `--allowed-images` for the sandbox proxy. One crate, so that the two can never read the same
//! list differently. Entries are exact references or prefixes ending in `*` (`procos/*`); a
//! reference without a tag means `:latest`.

/// Image references a sandbox may be made from (and pulled).
#[derive(Debug, Clone, Default)]
pub struct ImageAllowlist {
    patterns: Vec<String>,
}

impl ImageAllowlist {
    /// The list from its entries; blank entries are dropped.
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| normalize(&p))
                .collect(),
        }
    }

    /// Whether `image` (as a client names it) is on the list.
    pub fn allows(&self, image: &str) -> bool {
        let image = normalize(image);
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => *p == image,
        })
    }

    /// The entries, for messages.
    pub fn describe(&self) -> String {
        if self.patterns.is_empty() {
            "none".to_owned()
        } else {
            self.patterns.join(", ")
        }
    }
}

/// `name` → `name:latest`; references with a tag or a digest, and patterns, stay as they are.
pub fn normalize(image: &str) -> String {
    let image = image.trim();
    if image.ends_with('*') || image.contains('@') {
        return image.to_owned();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_prefixes_as_the_worker_reads_them() {
        let list = ImageAllowlist::new(["procos/*".to_owned(), "python:3.12".to_owned()]);
        assert!(list.allows("procos/python-sandbox"));
        assert!(list.allows("procos/python-sandbox:latest"));
        assert!(list.allows("python:3.12"));
        assert!(!list.allows("python"), "python means python:latest");
        assert!(!list.allows("evil/procos"));
        assert!(!list.allows("docker.io/procos/python-sandbox"));
        assert!(!list.allows("localhost:5000/procos/x"));
        assert!(!ImageAllowlist::new([" ".to_owned()]).allows("anything"));
    }

    #[test]
    fn registry_ports_are_not_tags() {
        assert_eq!(normalize("localhost:5000/a"), "localhost:5000/a:latest");
        assert_eq!(normalize("a@sha256:00"), "a@sha256:00");
        assert_eq!(normalize("a:1"), "a:1");
    }
}
