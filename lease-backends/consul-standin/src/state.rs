//! The stand-in's model of Consul's state: sessions and KV entries under one index, with no
//! I/O. Every method that depends on time takes `now`, so the rules can be tested step by step.
//!
//! The rules follow Consul's documentation of sessions, locks and KV:
//!
//! - Every write takes the next value of one index (Consul's Raft index), which becomes the
//!   `ModifyIndex` of what it wrote, so indexes only grow.
//! - A session with a TTL is invalidated when it is not renewed for TTL × the multiplier (Consul
//!   allows up to twice the TTL). Invalidation, like destruction, releases (behavior `release`)
//!   or deletes (behavior `delete`) every key the session holds, and starts the session's lock
//!   delay on each of them.
//! - `acquire` takes a free key, or updates a key the same session holds; it fails while another
//!   session holds the key or while the key's lock delay runs. `LockIndex` counts acquisitions
//!   by a new holder. `release` frees a key held by that session, with no lock delay.
//! - `cas=0` writes only a key that does not exist; `cas=N` only one whose `ModifyIndex` is N.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What happens to the keys a session holds when it is invalidated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// The keys are released: they stay, without a session.
    Release,
    /// The keys are deleted.
    Delete,
}

impl Behavior {
    /// Consul's name for the behavior.
    pub fn name(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// A session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The session's ID, shaped like a UUID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its TTL, if it has one.
    pub ttl: Option<Duration>,
    /// How long its keys stay locked after it is invalidated.
    pub lock_delay: Duration,
    /// What happens to its keys when it is invalidated.
    pub behavior: Behavior,
    /// When it is invalidated unless renewed.
    pub deadline: Option<Instant>,
    /// The index that created it.
    pub create_index: u64,
}

/// A KV entry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// Opaque flags a client may set.
    pub flags: u64,
    /// The session that holds the key's lock, if any.
    pub session: Option<String>,
    /// The index that created the key.
    pub create_index: u64,
    /// The index of the key's last write.
    pub modify_index: u64,
    /// How many times a new session acquired the key's lock.
    pub lock_index: u64,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A malformed request (HTTP 400).
    BadRequest(String),
    /// The request names a session that does not exist (HTTP 500, as Consul answers).
    InvalidSession(String),
    /// Nothing by that name (HTTP 404).
    NotFound(String),
}

/// A KV write, as chosen by the query parameters of a `PUT /v1/kv/<key>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvWrite {
    /// Set the value.
    Set,
    /// Set the value only if the key's `ModifyIndex` is this, or (0) if the key does not exist.
    Cas(u64),
    /// Take the key's lock for this session and set the value.
    Acquire(String),
    /// Give up this session's lock on the key and set the value.
    Release(String),
}

/// Sessions and KV entries under one index.
#[derive(Debug)]
pub struct State {
    /// The last index handed out.
    index: u64,
    /// The last index of any KV change.
    kv_index: u64,
    sessions: HashMap<String, Session>,
    kv: BTreeMap<String, Entry>,
    /// The index at which each deleted key was deleted.
    tombstones: HashMap<String, u64>,
    /// Until when each key may not be acquired.
    lock_delays: HashMap<String, Instant>,
    /// Sessions are invalidated after TTL × this.
    ttl_multiplier: u32,
}

impl State {
    /// An empty state whose sessions expire after TTL × `ttl_multiplier`.
    pub fn new(ttl_multiplier: u32) -> State {
        State {
            index: 1,
            kv_index: 1,
            sessions: HashMap::new(),
            kv: BTreeMap::new(),
            tombstones: HashMap::new(),
            lock_delays: HashMap::new(),
            ttl_multiplier,
        }
    }

    /// The last index handed out.
    pub fn index(&self) -> u64 {
        self.index
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// When a session with `ttl`, renewed at `now`, is invalidated: after TTL × the multiplier.
    /// A deadline past what `Instant` can hold means never.
    fn deadline(&self, ttl: Duration, now: Instant) -> Option<Instant> {
        ttl.checked_mul(self.ttl_multiplier)
            .and_then(|grace| now.checked_add(grace))
    }

    /// Creates a session with ID `id`; returns its ID.
    pub fn create_session(
        &mut self,
        id: String,
        name: String,
        ttl: Option<Duration>,
        lock_delay: Duration,
        behavior: Behavior,
        now: Instant,
    ) -> String {
        let create_index = self.next_index();
        let deadline = ttl.and_then(|ttl| self.deadline(ttl, now));
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name,
                ttl,
                lock_delay,
                behavior,
                deadline,
                create_index,
            },
        );
        id
    }

    /// The session with ID `id`.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Restarts a session's TTL.
    pub fn renew_session(&mut self, id: &str, now: Instant) -> Result<Session, Refusal> {
        let ttl = self
            .sessions
            .get(id)
            .ok_or_else(|| Refusal::NotFound(format!("Session id '{id}' not found")))?
            .ttl;
        let deadline = ttl.and_then(|ttl| self.deadline(ttl, now));
        let session = self
            .sessions
            .get_mut(id)
            .ok_or_else(|| Refusal::NotFound(format!("Session id '{id}' not found")))?;
        session.deadline = deadline;
        Ok(session.clone())
    }

    /// Destroys a session as if it were invalidated. Destroying one that does not exist does
    /// nothing.
    pub fn destroy_session(&mut self, id: &str, now: Instant) {
        self.invalidate(id, now);
    }

    /// Invalidates every session whose TTL ran out by `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|session| session.deadline.is_some_and(|deadline| deadline <= now))
            .map(|session| session.id.clone())
            .collect();
        for id in &expired {
            self.invalidate(id, now);
        }
        expired.len()
    }

    /// The earliest time a session will expire, if any has a TTL.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions.values().filter_map(|s| s.deadline).min()
    }

    fn invalidate(&mut self, id: &str, now: Instant) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, entry)| entry.session.as_deref() == Some(id))
            .map(|(key, _)| key.clone())
            .collect();
        let index = self.next_index();
        for key in held {
            if let Some(until) = now.checked_add(session.lock_delay) {
                self.lock_delays.insert(key.clone(), until);
            }
            match session.behavior {
                Behavior::Release => {
                    if let Some(entry) = self.kv.get_mut(&key) {
                        entry.session = None;
                        entry.modify_index = index;
                    }
                }
                Behavior::Delete => {
                    self.kv.remove(&key);
                    self.tombstones.insert(key, index);
                }
            }
            self.kv_index = index;
        }
    }

    /// Applies a KV write; returns whether it took effect (Consul's `true` or `false`).
    pub fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: Option<u64>,
        write: KvWrite,
        now: Instant,
    ) -> Result<bool, Refusal> {
        let existing = self.kv.get(key);
        match &write {
            KvWrite::Set => {}
            KvWrite::Cas(0) => {
                if existing.is_some() {
                    return Ok(false);
                }
            }
            KvWrite::Cas(index) => {
                if existing.is_none_or(|entry| entry.modify_index != *index) {
                    return Ok(false);
                }
            }
            KvWrite::Acquire(session) => {
                if !self.sessions.contains_key(session) {
                    return Err(Refusal::InvalidSession(format!(
                        "invalid session \"{session}\""
                    )));
                }
                match existing.and_then(|entry| entry.session.as_deref()) {
                    Some(holder) if holder != session => return Ok(false),
                    Some(_) => {}
                    None => {
                        if self.lock_delays.get(key).is_some_and(|until| now < *until) {
                            return Ok(false);
                        }
                    }
                }
            }
            KvWrite::Release(session) => {
                if existing.and_then(|entry| entry.session.as_deref()) != Some(session.as_str()) {
                    return Ok(false);
                }
            }
        }
        let index = self.next_index();
        let entry = self.kv.entry(key.to_string()).or_insert_with(|| Entry {
            value: Vec::new(),
            flags: 0,
            session: None,
            create_index: index,
            modify_index: index,
            lock_index: 0,
        });
        entry.value = value;
        if let Some(flags) = flags {
            entry.flags = flags;
        }
        entry.modify_index = index;
        match write {
            KvWrite::Acquire(session) => {
                if entry.session.as_deref() != Some(session.as_str()) {
                    entry.lock_index += 1;
                    entry.session = Some(session);
                }
            }
            KvWrite::Release(_) => entry.session = None,
            KvWrite::Set | KvWrite::Cas(_) => {}
        }
        self.tombstones.remove(key);
        self.kv_index = index;
        Ok(true)
    }

    /// Deletes a key, only if its `ModifyIndex` is `cas` when that is given (0: never, since a
    /// key that exists has a non-zero index). Deleting a missing key succeeds.
    pub fn delete(&mut self, key: &str, cas: Option<u64>) -> bool {
        let existing = self.kv.get(key);
        if let Some(cas) = cas {
            if existing.is_none_or(|entry| entry.modify_index != cas) {
                return false;
            }
        }
        if existing.is_none() {
            return true;
        }
        let index = self.next_index();
        self.kv.remove(key);
        self.tombstones.insert(key.to_string(), index);
        self.kv_index = index;
        true
    }

    /// The entry at `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.kv.get(key)
    }

    /// The index a blocking query on `key` waits past: the key's last write or deletion, or for
    /// a key never written, the last KV change. At least 1, as Consul promises.
    pub fn key_index(&self, key: &str) -> u64 {
        let index = match (self.kv.get(key), self.tombstones.get(key)) {
            (Some(entry), _) => entry.modify_index,
            (None, Some(deleted)) => *deleted,
            (None, None) => self.kv_index,
        };
        index.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn session(state: &mut State, id: &str, behavior: Behavior, now: Instant) -> String {
        state.create_session(
            id.into(),
            "test".into(),
            Some(SECOND),
            SECOND,
            behavior,
            now,
        )
    }

    #[test]
    fn one_session_holds_a_lock_at_a_time() {
        let now = Instant::now();
        let mut state = State::new(1);
        let a = session(&mut state, "a", Behavior::Delete, now);
        let b = session(&mut state, "b", Behavior::Delete, now);
        let acquire = |s: &String| KvWrite::Acquire(s.clone());
        assert_eq!(
            state.put("k", b"a".to_vec(), None, acquire(&a), now),
            Ok(true)
        );
        assert_eq!(
            state.put("k", b"b".to_vec(), None, acquire(&b), now),
            Ok(false)
        );
        // The holder may update its value; that is not a new acquisition.
        assert_eq!(
            state.put("k", b"a2".to_vec(), None, acquire(&a), now),
            Ok(true)
        );
        assert_eq!(state.get("k").unwrap().lock_index, 1);
        assert_eq!(
            state.put("k", vec![], None, KvWrite::Release(b.clone()), now),
            Ok(false)
        );
        assert_eq!(
            state.put("k", vec![], None, KvWrite::Release(a.clone()), now),
            Ok(true)
        );
        // A clean release leaves no lock delay.
        assert_eq!(
            state.put("k", b"b".to_vec(), None, acquire(&b), now),
            Ok(true)
        );
        assert_eq!(state.get("k").unwrap().lock_index, 2);
        assert!(matches!(
            state.put("k", vec![], None, KvWrite::Acquire("nope".into()), now),
            Err(Refusal::InvalidSession(_))
        ));
    }

    #[test]
    fn expiry_deletes_held_keys_and_starts_the_lock_delay() {
        let now = Instant::now();
        let mut state = State::new(2);
        let a = session(&mut state, "a", Behavior::Delete, now);
        let b = state.create_session(
            "b".into(),
            "test".into(),
            None,
            SECOND,
            Behavior::Delete,
            now,
        );
        state
            .put("k", b"a".to_vec(), None, KvWrite::Acquire(a.clone()), now)
            .unwrap();
        // TTL × 2: still alive after one TTL.
        assert_eq!(state.expire(now + SECOND), 0);
        assert_eq!(state.next_deadline(), Some(now + 2 * SECOND));
        let before = state.key_index("k");
        assert_eq!(state.expire(now + 2 * SECOND), 1);
        assert!(state.get("k").is_none());
        assert!(state.key_index("k") > before);
        assert!(state.renew_session(&a, now).is_err());
        let later = now + 2 * SECOND;
        let acquire = KvWrite::Acquire(b.clone());
        assert_eq!(
            state.put("k", vec![], None, acquire.clone(), later),
            Ok(false)
        );
        assert_eq!(
            state.put("k", vec![], None, acquire, later + SECOND),
            Ok(true)
        );
    }

    #[test]
    fn release_behavior_keeps_the_key() {
        let now = Instant::now();
        let mut state = State::new(1);
        let a = session(&mut state, "a", Behavior::Release, now);
        state
            .put("k", b"v".to_vec(), None, KvWrite::Acquire(a.clone()), now)
            .unwrap();
        state.destroy_session(&a, now);
        let entry = state.get("k").unwrap();
        assert_eq!(entry.session, None);
        assert_eq!(entry.value, b"v");
    }

    #[test]
    fn cas_zero_writes_only_a_new_key() {
        let now = Instant::now();
        let mut state = State::new(1);
        assert_eq!(
            state.put("c", b"1".to_vec(), None, KvWrite::Cas(0), now),
            Ok(true)
        );
        assert_eq!(
            state.put("c", b"2".to_vec(), None, KvWrite::Cas(0), now),
            Ok(false)
        );
        let index = state.get("c").unwrap().modify_index;
        assert_eq!(
            state.put("c", b"3".to_vec(), None, KvWrite::Cas(index), now),
            Ok(true)
        );
        assert_eq!(state.get("c").unwrap().value, b"3");
        assert!(!state.delete("c", Some(index)));
        assert!(state.delete("c", None));
        assert!(state.delete("c", None));
    }

    #[test]
    fn indexes_only_grow() {
        let now = Instant::now();
        let mut state = State::new(1);
        let mut last = state.index();
        let a = session(&mut state, "a", Behavior::Delete, now);
        for i in 0..5u8 {
            state
                .put("k", vec![i], None, KvWrite::Acquire(a.clone()), now)
                .unwrap();
            let index = state.get("k").unwrap().modify_index;
            assert!(index > last);
            last = index;
        }
    }
}
