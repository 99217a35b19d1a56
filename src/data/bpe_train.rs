//! BPE training: learns merges from pair counts over the unique pre-tokenized words,
//! updating the counts incrementally (only words that contain the merged pair are
//! touched) and picking the best pair from a lazily updated max-heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::data::pretokenize::{pretokenize, split_specials, Segment};

type Pair = (u32, u32);

/// Adds (or removes, with `sign = -1`) the adjacent pairs of `word`, `freq` times each.
fn count_pairs(
    word: &[u32],
    freq: i64,
    counts: &mut HashMap<Pair, i64>,
    changed: &mut HashSet<Pair>,
) {
    for w in word.windows(2) {
        let p = (w[0], w[1]);
        *counts.entry(p).or_insert(0) += freq;
        changed.insert(p);
    }
}

/// Replaces every occurrence of `pair` in `word`, left to right without overlap, by `id`.
fn merge_word(word: &mut Vec<u32>, pair: Pair, id: u32) {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    *word = out;
}

/// Learns up to `n_merges` merges over `text` with byte `b` as id `b` and the k-th
/// merge making id `256 + k`. Pairs are counted over adjacent positions of each unique
/// word, weighted by the word's frequency; the most frequent pair wins, ties going to
/// the smallest (left, right) ids. Stops early when no pair occurs at least twice.
/// Occurrences of the `cut` strings are removed from the text first.
pub(crate) fn learn_merges(text: &str, n_merges: usize, cut: &[(String, u32)]) -> Vec<Pair> {
    let mut freq_of: HashMap<&str, i64> = HashMap::new();
    for seg in split_specials(text, cut) {
        if let Segment::Text(t) = seg {
            for piece in pretokenize(t) {
                *freq_of.entry(piece).or_insert(0) += 1;
            }
        }
    }
    let (mut words, freqs): (Vec<Vec<u32>>, Vec<i64>) = freq_of
        .into_iter()
        .map(|(w, f)| (w.bytes().map(u32::from).collect(), f))
        .unzip();

    let mut counts: HashMap<Pair, i64> = HashMap::new();
    let mut occurs_in: HashMap<Pair, Vec<usize>> = HashMap::new();
    let mut changed = HashSet::new();
    for (wi, word) in words.iter().enumerate() {
        count_pairs(word, freqs[wi], &mut counts, &mut changed);
        for w in word.windows(2) {
            let list = occurs_in.entry((w[0], w[1])).or_default();
            if list.last() != Some(&wi) {
                list.push(wi);
            }
        }
    }
    // Max-heap on (count, then smallest ids); entries go stale when counts change and
    // are skipped unless they carry the pair's current count.
    let mut heap: BinaryHeap<(i64, Reverse<u32>, Reverse<u32>)> = counts
        .iter()
        .map(|(&(a, b), &c)| (c, Reverse(a), Reverse(b)))
        .collect();
    changed.clear();

    // Each merge replaces at least two pairs of symbols by one symbol each, so a
    // text of n bytes has room for at most n / 2 merges, whatever was asked.
    let mut merges = Vec::with_capacity(n_merges.min(text.len() / 2));
    let mut visited = vec![usize::MAX; words.len()];
    while merges.len() < n_merges {
        let Some((count, Reverse(a), Reverse(b))) = heap.pop() else {
            break;
        };
        if counts.get(&(a, b)) != Some(&count) {
            continue;
        }
        if count < 2 {
            break;
        }
        let pair = (a, b);
        let k = merges.len();
        let id = 256 + k as u32;
        for wi in occurs_in.remove(&pair).unwrap_or_default() {
            // A word can be listed twice (it regained the pair); handle it once.
            if visited[wi] == k {
                continue;
            }
            visited[wi] = k;
            let word = &mut words[wi];
            if !word.windows(2).any(|w| (w[0], w[1]) == pair) {
                continue;
            }
            count_pairs(word, -freqs[wi], &mut counts, &mut changed);
            merge_word(word, pair, id);
            count_pairs(word, freqs[wi], &mut counts, &mut changed);
            for w in word.windows(2) {
                if w[0] == id || w[1] == id {
                    let list = occurs_in.entry((w[0], w[1])).or_default();
                    if list.last() != Some(&wi) {
                        list.push(wi);
                    }
                }
            }
        }
        for p in changed.drain() {
            match counts.get(&p) {
                Some(&c) if c > 0 => heap.push((c, Reverse(p.0), Reverse(p.1))),
                Some(_) => {
                    counts.remove(&p);
                }
                None => {}
            }
        }
        merges.push(pair);
    }
    merges
}
