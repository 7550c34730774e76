//! Training examples and the sources that serve them.
//!
//! * [`SftExample`]: a prompt and its target completion (a worked solution) — `D_SFT`.
//! * [`RlPrompt`]: a prompt, the reference answer a verifier checks against, and free-form
//!   metadata — `D_RL`.
//! * [`ExampleSource`]: anything with a length that returns the example at an index.
//!   [`SftSource`] and [`PromptSource`] are the two instances the trainers ask for; they are
//!   implemented automatically for every `ExampleSource` of the right example type.
//! * [`DataCursor`]: a seeded, resumable walk over a source, reshuffled every epoch. Its state
//!   (seed, epoch, position) serialises into checkpoints.

use crate::error::{BridgeError, Result};
use crate::seed::{BridgeRng, derive_seed};
use serde::{Deserialize, Serialize};

/// Free-form metadata attached to an example (difficulty, source, …), logged and passed to rewards.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A supervised example: the model should produce `completion` after `prompt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftExample {
    /// A stable identifier (file:line or a dataset id).
    pub id: String,
    /// The rendered prompt (after any chat template).
    pub prompt: String,
    /// The target completion (reasoning and final answer).
    pub completion: String,
}

/// A reinforcement-learning prompt with a verifiable reference answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RlPrompt {
    /// A stable identifier (file:line or a dataset id).
    pub id: String,
    /// The rendered prompt (after any chat template).
    pub prompt: String,
    /// The reference the reward compares the completion with (e.g. the final answer `72`).
    pub reference: String,
    /// Anything else the reward or the logs may use.
    #[serde(default)]
    pub metadata: Metadata,
    /// A worked solution of this prompt (reasoning and answer), when the data row has one (a
    /// GSM8K `answer`, a MATH `solution`): the off-policy demonstration of mixed-policy RL
    /// (LUFFY). Algorithms that only sample ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demonstration: Option<String>,
}

impl RlPrompt {
    /// A prompt with a reference, no metadata and no demonstration.
    pub fn new(id: impl Into<String>, prompt: impl Into<String>, reference: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            prompt: prompt.into(),
            reference: reference.into(),
            metadata: Metadata::new(),
            demonstration: None,
        }
    }

    /// The same prompt with `demonstration` as its worked solution.
    pub fn with_demonstration(self, demonstration: impl Into<String>) -> Self {
        Self { demonstration: Some(demonstration.into()), ..self }
    }
}

/// A finite, indexable collection of examples.
pub trait ExampleSource: Send + Sync {
    /// The example type served.
    type Example;

    /// Number of examples.
    fn len(&self) -> usize;

    /// The example at `index` (`index < len()`); an error otherwise or if it cannot be produced.
    fn get(&self, index: usize) -> Result<Self::Example>;

    /// Whether the source holds no example.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All examples in their stored order.
    fn iter(&self) -> impl Iterator<Item = Result<Self::Example>> + '_
    where
        Self: Sized,
    {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// All examples in the seeded order of `epoch` (the order a [`DataCursor`] with this seed
    /// visits them in that epoch).
    fn iter_shuffled(&self, seed: u64, epoch: u64) -> impl Iterator<Item = Result<Self::Example>> + '_
    where
        Self: Sized,
    {
        epoch_order(seed, epoch, self.len()).into_iter().map(move |i| self.get(i))
    }
}

/// A source of supervised examples (`D_SFT`).
pub trait SftSource: ExampleSource<Example = SftExample> {}
impl<T: ExampleSource<Example = SftExample> + ?Sized> SftSource for T {}

/// A source of RL prompts with references (`D_RL`).
pub trait PromptSource: ExampleSource<Example = RlPrompt> {}
impl<T: ExampleSource<Example = RlPrompt> + ?Sized> PromptSource for T {}

/// Examples held in memory: the source every loader produces, and the test double.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InMemorySource<T> {
    items: Vec<T>,
}

impl<T> InMemorySource<T> {
    /// Wraps `items`.
    pub fn new(items: Vec<T>) -> Self {
        Self { items }
    }

    /// The examples, in stored order.
    pub fn items(&self) -> &[T] {
        &self.items
    }
}

impl<T> FromIterator<T> for InMemorySource<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

impl<T: Clone + Send + Sync> ExampleSource for InMemorySource<T> {
    type Example = T;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Result<T> {
        self.items.get(index).cloned().ok_or_else(|| {
            BridgeError::InvalidInput(format!("example index {index} out of range ({} examples)", self.items.len()))
        })
    }
}

/// The permutation of `0..len` that epoch `epoch` of a run seeded with `seed` visits.
pub fn epoch_order(seed: u64, epoch: u64, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = BridgeRng::seed_from_u64(derive_seed(seed, &format!("epoch/{epoch}")));
    rng.shuffle(&mut order);
    order
}

/// A resumable position in a seeded, per-epoch shuffled walk over a source.
///
/// ```
/// use bridge_core::{DataCursor, InMemorySource};
/// let source = InMemorySource::new(vec!['a', 'b', 'c']);
/// let mut cursor = DataCursor::new(42, true);
/// let first = cursor.next_batch(&source, 2).unwrap();   // epoch 0, items 0..2 of its order
/// let saved = cursor.clone();                            // what a checkpoint stores
/// let rest = cursor.next_batch(&source, 2).unwrap();     // last of epoch 0, first of epoch 1
/// assert_eq!(saved.clone().next_batch(&source, 2).unwrap(), rest);
/// assert_eq!(first.len() + rest.len(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// The seed the per-epoch orders derive from.
    pub seed: u64,
    /// Whether to shuffle; `false` walks the stored order every epoch.
    pub shuffle: bool,
    /// Completed passes over the source.
    pub epoch: u64,
    /// Position inside the current epoch's order.
    pub position: usize,
}

impl DataCursor {
    /// A cursor at the start of epoch 0.
    pub fn new(seed: u64, shuffle: bool) -> Self {
        Self { seed, shuffle, epoch: 0, position: 0 }
    }

    fn order(&self, len: usize) -> Vec<usize> {
        if self.shuffle { epoch_order(self.seed, self.epoch, len) } else { (0..len).collect() }
    }

    /// The next `n` indices of a source of `len` examples, crossing epoch boundaries as needed.
    pub fn next_indices(&mut self, len: usize, n: usize) -> Result<Vec<usize>> {
        if len == 0 {
            return Err(BridgeError::InvalidInput("cannot draw from an empty data source".into()));
        }
        let mut out = Vec::with_capacity(n);
        let mut order = self.order(len);
        while out.len() < n {
            if self.position >= len {
                self.epoch += 1;
                self.position = 0;
                order = self.order(len);
            }
            out.push(order[self.position]);
            self.position += 1;
        }
        Ok(out)
    }

    /// The next `n` examples of `source`.
    pub fn next_batch<S: ExampleSource + ?Sized>(&mut self, source: &S, n: usize) -> Result<Vec<S::Example>> {
        self.next_indices(source.len(), n)?.into_iter().map(|i| source.get(i)).collect()
    }

    /// Fractional epochs consumed of a source of `len` examples.
    pub fn epochs_done(&self, len: usize) -> f64 {
        if len == 0 { 0.0 } else { self.epoch as f64 + self.position as f64 / len as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sft(i: usize) -> SftExample {
        SftExample { id: i.to_string(), prompt: format!("q{i}"), completion: format!("a{i}") }
    }

    #[test]
    fn cursor_visits_each_example_once_per_epoch() {
        let source: InMemorySource<SftExample> = (0..7).map(sft).collect();
        let mut c = DataCursor::new(1, true);
        let mut seen: Vec<String> = c.next_batch(&source, 7).unwrap().into_iter().map(|e| e.id).collect();
        seen.sort();
        assert_eq!(seen, (0..7).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(c.epochs_done(7), 1.0);
        let e1 = c.next_indices(7, 7).unwrap();
        assert_ne!(e1, epoch_order(1, 0, 7), "each epoch is reshuffled");
        assert_eq!(e1, epoch_order(1, 1, 7));
    }

    #[test]
    fn cursor_resume_is_exact_and_seeded() {
        let mut a = DataCursor::new(9, true);
        let _ = a.next_indices(10, 13).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        let mut b: DataCursor = serde_json::from_str(&json).unwrap();
        assert_eq!(a.next_indices(10, 25).unwrap(), b.next_indices(10, 25).unwrap());
        assert_ne!(epoch_order(9, 0, 50), epoch_order(10, 0, 50));
    }

    #[test]
    fn unshuffled_cursor_walks_in_order_and_empty_source_is_an_error() {
        let mut c = DataCursor::new(0, false);
        assert_eq!(c.next_indices(3, 5).unwrap(), vec![0, 1, 2, 0, 1]);
        assert!(c.next_indices(0, 1).is_err());
    }

    #[test]
    fn sources_iterate_and_report_out_of_range() {
        let source: InMemorySource<SftExample> = (0..4).map(sft).collect();
        fn takes_sft<S: SftSource>(s: &S) -> usize {
            s.iter().count()
        }
        assert_eq!(takes_sft(&source), 4);
        let shuffled: Vec<_> = source.iter_shuffled(5, 0).map(|e| e.unwrap().id).collect();
        let expected: Vec<_> = epoch_order(5, 0, 4).into_iter().map(|i| i.to_string()).collect();
        assert_eq!(shuffled, expected);
        assert!(source.get(4).is_err());
        let prompts = InMemorySource::new(vec![RlPrompt::new("p", "1+1=", "2")]);
        fn takes_prompts<S: PromptSource>(s: &S) -> String {
            s.get(0).unwrap().reference
        }
        assert_eq!(takes_prompts(&prompts), "2");
    }
}
