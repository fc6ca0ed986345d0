//! The name registry's map: `dashmap`, or a mutex-guarded `HashMap` under loom.

#[cfg(loom)]
use super::Mutex;

/// A concurrent map from names to values: `dashmap`, or a mutex-guarded `HashMap` under loom.
pub struct NameMap<V> {
    #[cfg(not(loom))]
    map: dashmap::DashMap<String, V>,
    #[cfg(loom)]
    map: Mutex<std::collections::HashMap<String, V>>,
}

impl<V: Clone> NameMap<V> {
    pub fn new() -> NameMap<V> {
        NameMap {
            #[cfg(not(loom))]
            map: dashmap::DashMap::new(),
            #[cfg(loom)]
            map: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Inserts `value` under `name` unless the name is taken; hands the value back if it is.
    pub fn try_insert(&self, name: &str, value: V) -> Result<(), V> {
        #[cfg(not(loom))]
        {
            match self.map.entry(name.to_owned()) {
                dashmap::Entry::Occupied(_) => Err(value),
                dashmap::Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
            }
        }
        #[cfg(loom)]
        {
            let mut map = self.map.lock().unwrap();
            if map.contains_key(name) {
                return Err(value);
            }
            map.insert(name.to_owned(), value);
            Ok(())
        }
    }

    pub fn get(&self, name: &str) -> Option<V> {
        #[cfg(not(loom))]
        {
            self.map.get(name).map(|v| v.value().clone())
        }
        #[cfg(loom)]
        {
            self.map.lock().unwrap().get(name).cloned()
        }
    }

    /// Removes `name` only if `pred` holds for its value (so a stopping actor frees its own
    /// name and never a newer holder's).
    pub fn remove_if(&self, name: &str, pred: impl FnOnce(&V) -> bool) -> bool {
        #[cfg(not(loom))]
        {
            self.map.remove_if(name, |_, v| pred(v)).is_some()
        }
        #[cfg(loom)]
        {
            let mut map = self.map.lock().unwrap();
            if map.get(name).is_some_and(pred) {
                map.remove(name);
                true
            } else {
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        #[cfg(not(loom))]
        {
            self.map.len()
        }
        #[cfg(loom)]
        {
            self.map.lock().unwrap().len()
        }
    }

    /// Calls `f` with each name and its value (a scan: for reports, not hot paths).
    pub fn for_each(&self, mut f: impl FnMut(&str, &V)) {
        #[cfg(not(loom))]
        for e in self.map.iter() {
            f(e.key(), e.value());
        }
        #[cfg(loom)]
        for (k, v) in self.map.lock().unwrap().iter() {
            f(k, v);
        }
    }

    /// The first name whose value satisfies `pred` (a scan: for reports, not hot paths).
    #[cfg_attr(
        loom,
        allow(dead_code, reason = "the watchdog's; none runs under loom")
    )]
    pub fn find_name(&self, mut pred: impl FnMut(&V) -> bool) -> Option<String> {
        #[cfg(not(loom))]
        {
            self.map
                .iter()
                .find(|e| pred(e.value()))
                .map(|e| e.key().clone())
        }
        #[cfg(loom)]
        {
            let map = self.map.lock().unwrap();
            map.iter().find(|(_, v)| pred(v)).map(|(k, _)| k.clone())
        }
    }
}
