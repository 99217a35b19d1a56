//! The optimiser's arenas: the trainable f32 parameters of one group (those
//! AdamW decays, those it does not) laid side by side in one buffer, their
//! gradients and optimiser state likewise, so that the update, the gradient
//! norm and the inf/NaN check run once per arena chunk instead of once per
//! parameter (PyTorch's "fused" optimisers do the same).
//!
//! Each parameter's value becomes a view of its chunk ([`Param::replace_value`])
//! and its gradient gets a home there ([`Param::set_grad_home`]): backward
//! writes the first gradient of a step into that home (a linear layer's dW
//! product directly, any other gradient by a copy) and sums later ones in
//! place. A chunk is at most one storage binding (`max_storage_buffer_binding_size`);
//! every parameter starts on the device's binding alignment, so the views bind
//! to any kernel, and the gaps between them hold zeros that the update keeps
//! at zero. When a chunk is not as it was built at a step (a parameter frozen,
//! left without a gradient, or given another value since) that step updates
//! its parameters one by one, exactly as without arenas.

use crate::autograd::Param;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::copy::copy_into;
use crate::kernels::optim::zero_tails;
use crate::tensor::{DType, Tensor};

/// One buffer's worth of parameters of one group, with their gradients and state.
pub(crate) struct Chunk {
    /// Indices of the parameters in the optimiser's list, in arena order.
    pub members: Vec<usize>,
    /// Whether AdamW's decoupled weight decay applies to them.
    pub decays: bool,
    /// The gradients, flat (read as one tensor by the update and the norm).
    pub grads: Tensor,
    /// The values, flat.
    pub values: Tensor,
    /// Adam's `[m, v]` or SGD's `[momentum]`, flat.
    pub state: Vec<Tensor>,
    /// Per member: its value's and its gradient's views.
    homes: Vec<(Tensor, Tensor)>,
    /// `(first element, count)` of the floats past each gradient whose length
    /// is not a multiple of 4, up to its vec4 (see grad_tails.wgsl); `None`
    /// when every length is.
    tails: Option<Tensor>,
}

impl Chunk {
    /// True when every member is still trainable, holds its arena value and
    /// has its gradient in its home: the chunk can be updated as one tensor.
    pub fn ready(&self, params: &[Param]) -> bool {
        self.members
            .iter()
            .zip(&self.homes)
            .all(|(&i, (value, grad))| {
                let p = &params[i];
                p.is_trainable()
                    && p.value().same_elements(value)
                    && p.grad().is_some_and(|g| g.same_elements(grad))
            })
    }

    /// Zeroes the gradients' vec4 tails, so the flat gradients hold exactly
    /// the members' gradients and zeros.
    pub fn clean_tails(&self) -> Result<()> {
        match &self.tails {
            Some(tails) => zero_tails(&self.grads, tails),
            None => Ok(()),
        }
    }
}

/// The arenas of `params` with `slots` state tensors per parameter: moves the
/// trainable f32 parameters' values into them and gives their gradients a
/// home there. Returns the chunks and, per parameter, its state: views of a
/// chunk's, or zeroed tensors of its own for the parameters left out (frozen,
/// or not f32).
pub(crate) fn build(
    gpu: &Gpu,
    params: &[Param],
    slots: usize,
) -> Result<(Vec<Chunk>, Vec<Vec<Tensor>>)> {
    let align = (gpu.limits().min_storage_buffer_offset_alignment as usize).max(16) / 4;
    let capacity = (gpu.max_binding_bytes() as usize / 4) / align * align;
    let mut chunks = Vec::new();
    for decays in [true, false] {
        let slots_of_group = params.iter().enumerate().filter_map(|(i, p)| {
            let value = p.value();
            let member = p.decays() == decays && p.is_trainable() && value.dtype() == DType::F32;
            member.then(|| (i, value.numel().max(1).next_multiple_of(align)))
        });
        for (members, len) in pack(slots_of_group, capacity) {
            chunks.push(chunk(gpu, params, members, len, align, decays, slots)?);
        }
    }
    let mut state: Vec<Vec<Tensor>> = vec![Vec::new(); params.len()];
    for c in &chunks {
        for (&i, (value, _)) in c.members.iter().zip(&c.homes) {
            let start = value.byte_offset() - c.values.byte_offset();
            state[i] = c
                .state
                .iter()
                .map(|s| s.view(start as usize / 4, value.shape()))
                .collect::<Result<_>>()?;
        }
    }
    for (p, s) in params.iter().zip(&mut state) {
        if s.is_empty() {
            *s = (0..slots)
                .map(|_| Tensor::zeros(gpu, p.value().shape()))
                .collect::<Result<_>>()?;
        }
    }
    Ok((chunks, state))
}

/// Packs `(index, slot length)`s greedily in their order into chunks of at
/// most `capacity` elements (a slot longer than that gets a chunk of its
/// own): each chunk's indices and length.
fn pack(slots: impl Iterator<Item = (usize, usize)>, capacity: usize) -> Vec<(Vec<usize>, usize)> {
    let mut chunks: Vec<(Vec<usize>, usize)> = Vec::new();
    for (i, len) in slots {
        match chunks.last_mut() {
            Some((members, used)) if *used + len <= capacity => {
                members.push(i);
                *used += len;
            }
            _ => chunks.push((vec![i], len)),
        }
    }
    chunks
}

/// A chunk of `len` elements holding `members`, their values copied in.
fn chunk(
    gpu: &Gpu,
    params: &[Param],
    members: Vec<usize>,
    len: usize,
    align: usize,
    decays: bool,
    slots: usize,
) -> Result<Chunk> {
    let values = Tensor::zeros(gpu, &[len])?;
    let grads = Tensor::zeros(gpu, &[len])?;
    let state = (0..slots)
        .map(|_| Tensor::zeros(gpu, &[len]))
        .collect::<Result<Vec<_>>>()?;
    let mut homes = Vec::with_capacity(members.len());
    let mut tails = Vec::new();
    let mut start = 0;
    for &i in &members {
        let p = &params[i];
        let old = p.value();
        let n = old.numel();
        let value = values.view(start, old.shape())?;
        let grad = grads.view(start, old.shape())?;
        copy_into(&old, &value)?;
        p.replace_value(value.clone());
        p.set_grad_home(Some(grad.clone()))?;
        if !n.is_multiple_of(4) {
            tails.extend([(start + n) as u32, (4 - n % 4) as u32]);
        }
        homes.push((value, grad));
        start += n.max(1).next_multiple_of(align);
    }
    let tails = match tails.is_empty() {
        true => None,
        false => Some(Tensor::from_u32(gpu, &tails, &[tails.len() / 2, 2])?),
    };
    Ok(Chunk {
        members,
        decays,
        grads,
        values,
        state,
        homes,
        tails,
    })
}

#[cfg(test)]
mod tests {
    use super::pack;

    #[test]
    fn packing_starts_a_chunk_where_the_next_slot_would_overflow() {
        let slots = [(0, 64), (1, 128), (2, 64), (3, 256), (4, 64)];
        let chunks = pack(slots.into_iter(), 256);
        let want = [(vec![0, 1, 2], 256), (vec![3], 256), (vec![4], 64)];
        assert_eq!(chunks, want);
    }
}
