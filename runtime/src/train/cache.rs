//! [`FeatureCache`]: trunk features of many samples, computed once and read by every epoch.
//!
//! Rows live in RAM until the cache would exceed its memory budget; then every tensor moves to
//! an unlinked temporary file (deleted when the cache is dropped) that is memory-mapped for
//! reading.

use super::array::Array;
use crate::error::{Error, Result};
use crate::tensor::{element_count, Tensor};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Default memory budget of a feature cache (1 GiB).
pub const DEFAULT_BUDGET: usize = 1 << 30;

enum Storage {
    Ram(Vec<f32>),
    File { file: File, map: Option<memmap2::Mmap> },
}

struct Column {
    name: String,
    row_shape: Vec<usize>,
    row_len: usize,
    storage: Storage,
}

/// Per-sample trunk tensors, by name, for `rows()` samples.
pub struct FeatureCache {
    columns: Vec<Column>,
    rows: usize,
    budget: usize,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for FeatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureCache")
            .field("rows", &self.rows)
            .field("tensors", &self.columns.iter().map(|c| &c.name).collect::<Vec<_>>())
            .field("on_disk", &self.on_disk())
            .finish()
    }
}

impl FeatureCache {
    /// An empty cache holding at most `budget` bytes in RAM; beyond that it spills to a file in
    /// `dir` (default: the system's temporary folder).
    pub fn new(budget: usize, dir: Option<PathBuf>) -> FeatureCache {
        FeatureCache { columns: Vec::new(), rows: 0, budget, dir }
    }

    /// Samples held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when the rows live in a memory-mapped file.
    pub fn on_disk(&self) -> bool {
        self.columns.iter().any(|c| matches!(c.storage, Storage::File { .. }))
    }

    /// Names of the tensors held.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// The shape of one sample of tensor `name`.
    pub fn row_shape(&self, name: &str) -> Option<&[usize]> {
        self.columns.iter().find(|c| c.name == name).map(|c| c.row_shape.as_slice())
    }

    /// Appends a batch: every tensor the cache holds (all of them, on the first call) with the
    /// same number of rows on axis 0 and the same per-row shape as before.
    pub fn append(&mut self, batch: &[(&str, &Tensor)]) -> Result<()> {
        let n = match batch.first() {
            Some((_, t)) => t.shape().first().copied().unwrap_or(0),
            None => return Err(Error::InvalidArgument("no feature tensors to cache".into())),
        };
        if self.columns.is_empty() {
            for (name, t) in batch {
                if batch.iter().filter(|(m, _)| m == name).count() > 1 {
                    return Err(Error::InvalidArgument(format!("feature `{name}` given twice")));
                }
                let row_shape = t.shape().get(1..).unwrap_or(&[]).to_vec();
                let row_len = element_count(&row_shape)?;
                self.columns.push(Column {
                    name: name.to_string(),
                    row_shape,
                    row_len,
                    storage: Storage::Ram(Vec::new()),
                });
            }
        }
        if batch.len() != self.columns.len() {
            return Err(Error::InvalidArgument(format!(
                "a batch gives {} feature tensors, the cache holds {}",
                batch.len(),
                self.columns.len()
            )));
        }
        let mut rows = Vec::with_capacity(batch.len());
        for col in &self.columns {
            let t = batch
                .iter()
                .find(|(name, _)| *name == col.name)
                .map(|(_, t)| *t)
                .ok_or_else(|| Error::MissingFeature(col.name.clone()))?;
            if t.shape().first() != Some(&n) || t.shape()[1..] != col.row_shape[..] {
                return Err(Error::BadTensor(format!(
                    "feature `{}`: shape {:?}, expected [{n}, {}]",
                    col.name,
                    t.shape(),
                    col.row_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            let a = Array::<f32>::from_tensor(t)
                .map_err(|e| Error::BadTensor(format!("feature `{}`: {e}", col.name)))?;
            if let Some(i) = a.data().iter().position(|x| !x.is_finite()) {
                return Err(Error::BadTensor(format!(
                    "feature `{}`: non-finite value at element {i}",
                    col.name
                )));
            }
            rows.push(a.into_data());
        }
        let new_bytes: usize = rows.iter().map(|r| r.len() * 4).sum();
        if !self.on_disk() && self.ram_bytes() + new_bytes > self.budget {
            self.spill()?;
        }
        for (col, data) in self.columns.iter_mut().zip(rows) {
            match &mut col.storage {
                Storage::Ram(v) => v.extend_from_slice(&data),
                Storage::File { file, map } => {
                    *map = None;
                    file.seek(SeekFrom::End(0)).map_err(|e| io(&col.name, e))?;
                    file.write_all(bytemuck::cast_slice(&data)).map_err(|e| io(&col.name, e))?;
                }
            }
        }
        self.rows += n;
        Ok(())
    }

    fn ram_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(|c| if let Storage::Ram(v) = &c.storage { v.len() * 4 } else { 0 })
            .sum()
    }

    /// Moves every tensor to a temporary file.
    fn spill(&mut self) -> Result<()> {
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        for col in &mut self.columns {
            if let Storage::Ram(v) = &col.storage {
                let mut file = tempfile::tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
                file.write_all(bytemuck::cast_slice(v)).map_err(|e| io(&col.name, e))?;
                col.storage = Storage::File { file, map: None };
            }
        }
        Ok(())
    }

    /// Rows `idx` of tensor `name`, stacked into `[idx.len(), …]`.
    pub fn gather(&mut self, name: &str, idx: &[usize]) -> Result<Array<f32>> {
        let rows = self.rows;
        let col = self
            .columns
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::MissingFeature(name.to_string()))?;
        let len = col.row_len;
        let data: &[f32] = match &mut col.storage {
            Storage::Ram(v) => v,
            Storage::File { file, map } => {
                if map.is_none() {
                    file.flush().map_err(|e| io(name, e))?;
                    // SAFETY: the file is private to this cache (unlinked temporary), never
                    // written while mapped (appending drops the map first).
                    *map = Some(unsafe { memmap2::Mmap::map(&*file) }.map_err(|e| io(name, e))?);
                }
                let bytes = map.as_deref().unwrap_or(&[]);
                bytemuck::try_cast_slice(bytes)
                    .map_err(|e| Error::BadTensor(format!("feature cache `{name}`: {e}")))?
            }
        };
        let mut out = Vec::with_capacity(idx.len() * len);
        for &i in idx {
            if i >= rows {
                return Err(Error::InvalidArgument(format!(
                    "sample {i} out of range (cache holds {rows})"
                )));
            }
            out.extend_from_slice(&data[i * len..(i + 1) * len]);
        }
        let shape: Vec<usize> =
            std::iter::once(idx.len()).chain(col.row_shape.iter().copied()).collect();
        Array::new(&shape, out)
    }
}

fn io(name: &str, e: std::io::Error) -> Error {
    Error::io(format!("feature cache `{name}`"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(start: usize, n: usize) -> Tensor {
        Tensor::new(&[n, 2, 3], (start * 6..(start + n) * 6).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn spills_to_disk_past_the_budget_and_reads_the_same_rows() {
        for budget in [usize::MAX, 100] {
            let mut c = FeatureCache::new(budget, None);
            c.append(&[("f", &batch(0, 3))]).unwrap();
            c.append(&[("f", &batch(3, 4))]).unwrap();
            assert_eq!(c.on_disk(), budget == 100);
            let g = c.gather("f", &[6, 0, 3]).unwrap();
            assert_eq!(g.shape(), &[3, 2, 3]);
            let want: Vec<f32> =
                [6, 0, 3].iter().flat_map(|&r| (r * 6..r * 6 + 6).map(|i| i as f32)).collect();
            assert_eq!(g.data(), &want[..]);
            c.append(&[("f", &batch(7, 1))]).unwrap();
            assert_eq!(c.gather("f", &[7]).unwrap().data()[0], 42.0);
        }
    }

    #[test]
    fn mismatched_batches_are_refused() {
        let mut c = FeatureCache::new(usize::MAX, None);
        c.append(&[("f", &batch(0, 2))]).unwrap();
        let wrong = Tensor::new(&[1, 3, 2], vec![0.0f32; 6]).unwrap();
        assert!(c.append(&[("f", &wrong)]).unwrap_err().to_string().contains("expected [1, 2, 3]"));
        let nan = Tensor::new(&[1, 2, 3], vec![f32::NAN; 6]).unwrap();
        assert!(c.append(&[("f", &nan)]).unwrap_err().to_string().contains("non-finite"));
        assert!(c.gather("f", &[5]).is_err());
        assert!(matches!(c.gather("g", &[0]), Err(Error::MissingFeature(_))));
    }
}
