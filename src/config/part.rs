//! What a source compiled for a site, a profile, a device or a point, in the source's own
//! type. The site compiler carries parts without knowing what is in them; the source that
//! made a part reads it back with [`Part::get`] (`sources::modbus` its `ModbusAddr`,
//! `sources::mqtt` its `JsonPoint`, ...). So a new source adds no variant anywhere here.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// One source's compiled part.
#[derive(Clone)]
pub struct Part {
    source: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

impl Part {
    /// `source`: the registered source's name (`modbus`).
    pub fn new<T: Any + Send + Sync>(source: &'static str, value: T) -> Self {
        Part {
            source,
            value: Arc::new(value),
        }
    }

    /// The name of the source that made it.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The part as its source's type, if it is one.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }

    /// Changed in place while nothing else holds it (the simulator binds ports before the
    /// site is shared).
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        Arc::get_mut(&mut self.value)?.downcast_mut()
    }
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Part({})", self.source)
    }
}

/// The parts of several sources (a site's: Modbus connections, an MQTT broker, ...).
#[derive(Clone, Debug, Default)]
pub struct Parts(Vec<Part>);

impl Parts {
    pub fn push(&mut self, part: Part) {
        self.0.push(part);
    }

    /// The part of type `T`, if a source made one.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.iter().find_map(Part::get)
    }

    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.0.iter_mut().find_map(Part::get_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_read_back_as_its_own_type_only() {
        let mut p = Part::new("modbus", 7u16);
        assert_eq!(p.source(), "modbus");
        assert_eq!(p.get::<u16>(), Some(&7));
        assert_eq!(p.get::<u32>(), None);
        *p.get_mut::<u16>().unwrap() = 8;
        let shared = p.clone();
        assert_eq!(shared.get::<u16>(), Some(&8));
        assert!(p.get_mut::<u16>().is_none(), "not while shared");
        let mut parts = Parts::default();
        parts.push(Part::new("a", 1u8));
        parts.push(Part::new("b", String::from("x")));
        assert_eq!(parts.get::<String>().map(String::as_str), Some("x"));
        assert_eq!(parts.get::<u8>(), Some(&1));
        assert!(parts.get::<i64>().is_none());
        assert_eq!(format!("{p:?}"), "Part(modbus)");
    }
}
