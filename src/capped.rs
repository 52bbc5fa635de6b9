//! A least-recently-used cache with a size cap that allocates as it grows: `lru`'s own capped
//! constructor reserves its whole capacity at once, which every mount would pay for caches that
//! usually stay small.
//!
//! Promises: never more than `cap` entries; the least recently used entry goes first, and its
//! value is dropped (a `Content` inside is zeroed then).

use std::hash::Hash;

use lru::LruCache;

pub struct Capped<K: Hash + Eq, V> {
    cache: LruCache<K, V>,
    cap: usize,
}

impl<K: Hash + Eq, V> Capped<K, V> {
    pub fn new(cap: usize) -> Self {
        Capped {
            cache: LruCache::unbounded(),
            cap: cap.max(1),
        }
    }

    /// Makes room for one more entry unless `key` is already there.
    fn room_for(&mut self, key: &K) {
        if !self.cache.contains(key) && self.cache.len() >= self.cap {
            self.cache.pop_lru();
        }
    }

    pub fn put(&mut self, key: K, value: V) -> Option<V> {
        self.room_for(&key);
        self.cache.put(key, value)
    }

    pub fn get_or_insert_mut(&mut self, key: K, f: impl FnOnce() -> V) -> &mut V {
        self.room_for(&key);
        self.cache.get_or_insert_mut(key, f)
    }

    /// A value, marked as just used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.get(key)
    }

    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.cache.peek_mut(key)
    }

    pub fn pop(&mut self, key: &K) -> Option<V> {
        self.cache.pop(key)
    }

    /// Every entry, changeable, without changing the order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.cache.iter_mut()
    }
}

impl<K: Hash + Eq, V> std::ops::Deref for Capped<K, V> {
    type Target = LruCache<K, V>;

    /// Reading without changing the order (`peek`, `iter`, `len`).
    fn deref(&self) -> &LruCache<K, V> {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first_and_the_cap_holds() {
        let mut c = Capped::new(2);
        c.put("a", 1);
        c.put("b", 2);
        c.get(&"a");
        c.put("c", 3);
        assert_eq!(c.len(), 2);
        assert!(c.peek(&"b").is_none(), "b was the least recently used");
        *c.get_or_insert_mut("d", || 0) += 4;
        assert_eq!((c.len(), c.peek(&"d")), (2, Some(&4)));
        c.put("d", 5);
        assert_eq!(c.len(), 2, "replacing takes no room");
    }
}
