//! Profile-type ids: `name:sample_type:sample_unit:period_type:period_unit`, the key every
//! query selects by and every block lists. One parser for every surface.

use std::fmt;

/// A parsed profile-type id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileType {
    pub name: String,
    pub sample_type: String,
    pub sample_unit: String,
    pub period_type: String,
    pub period_unit: String,
}

/// An id that is not `name:sample_type:sample_unit:period_type:period_unit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid profile type {id:?}: expected name:sample_type:sample_unit:period_type:period_unit"
)]
pub struct ProfileTypeError {
    pub id: String,
}

/// The id of a profile type's parts.
pub fn id(
    name: &str,
    sample_type: &str,
    sample_unit: &str,
    period_type: &str,
    period_unit: &str,
) -> String {
    format!("{name}:{sample_type}:{sample_unit}:{period_type}:{period_unit}")
}

impl ProfileType {
    /// Parses an id; a sixth part `delta` (as Grafana sends for delta types) is accepted and
    /// dropped. The name must not be empty; the other parts may be.
    pub fn parse(id: &str) -> Result<Self, ProfileTypeError> {
        let parts: Vec<&str> = id.split(':').collect();
        if !(parts.len() == 5 || (parts.len() == 6 && parts[5] == "delta")) || parts[0].is_empty() {
            return Err(ProfileTypeError { id: id.to_owned() });
        }
        Ok(Self {
            name: parts[0].into(),
            sample_type: parts[1].into(),
            sample_unit: parts[2].into(),
            period_type: parts[3].into(),
            period_unit: parts[4].into(),
        })
    }

    /// The five-part id.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ProfileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}:{}",
            self.name, self.sample_type, self.sample_unit, self.period_type, self.period_unit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_five_parts_and_a_delta_suffix() {
        let pt = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        assert_eq!(
            (
                pt.name.as_str(),
                pt.sample_type.as_str(),
                pt.period_unit.as_str()
            ),
            ("process_cpu", "cpu", "nanoseconds")
        );
        assert_eq!(pt.id(), "process_cpu:cpu:nanoseconds:cpu:nanoseconds");
        let delta = ProfileType::parse("memory:alloc_space:bytes:space:bytes:delta").unwrap();
        assert_eq!(delta.id(), "memory:alloc_space:bytes:space:bytes");
        assert_eq!(
            ProfileType::parse("goroutine:goroutine:count::")
                .unwrap()
                .id(),
            "goroutine:goroutine:count::"
        );
        for bad in ["", "cpu", ":a:b:c:d", "a:b:c:d:e:f", "a:b:c:d:e:delta:x"] {
            assert!(ProfileType::parse(bad).is_err(), "{bad}");
        }
    }
}
