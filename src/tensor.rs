//! `Tensor`: a shape, a dtype and a pooled GPU buffer. Row-major and contiguous;
//! `reshape` shares the buffer. The buffer returns to the pool when the last
//! tensor that shares it drops. Inside the crate a tensor can also be a view
//! of part of another's buffer (the optimiser's arenas, see `optim::arena`):
//! it starts at a byte offset that the device's storage-binding alignment
//! allows, and every binding, copy and readback starts there.

use crate::error::{human_bytes, Error, Result};
use crate::gpu::{Gpu, PooledBuffer};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
/// Element type of a [`Tensor`].
pub enum DType {
    /// 32-bit float.
    F32,
    /// IEEE half; needs the adapter's shader-f16 to be used by kernels.
    F16,
    /// Token ids, targets, indices.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
}

struct Storage {
    gpu: Gpu,
    buffer: PooledBuffer,
}

#[derive(Clone)]
/// An n-dimensional array on the GPU: a shape, a [`DType`] and a pooled buffer
/// (row-major). Cloning shares the buffer; it returns to the pool when the last
/// clone drops. Ops encode into the GPU's pending batch; reading back
/// (`to_vec`) submits it.
pub struct Tensor {
    storage: Arc<Storage>,
    /// Where the tensor starts in the buffer, in bytes (0 unless a view).
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, buffer #{} at {})",
            self.shape, self.dtype, self.storage.buffer.id, self.offset
        )
    }
}

/// Number of elements of a shape (1 for a scalar `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A tensor with undefined contents (a recycled buffer); kernels write all of it.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the byte size of
    ///   `shape` overflows `u64`.
    /// - [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge)
    ///   ([`Error::TooLarge`]) when it exceeds the device's largest storage
    ///   binding ([`Gpu::max_binding_bytes`]).
    ///
    /// Running out of GPU memory is reported by wgpu later:
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) from the next flush or readback.
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::alloc(gpu, shape, dtype, false)
    }

    /// The bytes of a `dtype` tensor of `shape`, refused (before anything is
    /// allocated, on the host or the GPU) when they overflow or exceed the
    /// device's largest storage binding.
    fn checked_bytes(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<u64> {
        let bytes = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| Error::invalid("Tensor::empty", format!("shape {shape:?} overflows")))?;
        let limit = gpu.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                what: format!("a {dtype:?} tensor of shape {shape:?}"),
                needed: human_bytes(bytes),
                limit: human_bytes(limit),
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(bytes)
    }

    /// The element count of an f32 tensor of `shape` whose values are built on
    /// the host, checked first as [`Tensor::checked_bytes`] does.
    fn host_numel(gpu: &Gpu, shape: &[usize]) -> Result<usize> {
        Self::checked_bytes(gpu, shape, DType::F32)?;
        Ok(numel(shape))
    }

    fn alloc(gpu: &Gpu, shape: &[usize], dtype: DType, for_upload: bool) -> Result<Tensor> {
        let bytes = Self::checked_bytes(gpu, shape, dtype)?;
        let label = format!("tensor {shape:?} {dtype:?}");
        let buffer = crate::gpu::pool_take(gpu, bytes.max(4), &label, for_upload);
        Ok(Tensor {
            storage: Arc::new(Storage {
                gpu: gpu.clone(),
                buffer,
            }),
            offset: 0,
            shape: shape.to_vec(),
            dtype,
        })
    }

    fn upload(
        gpu: &Gpu,
        bytes: &[u8],
        shape: &[usize],
        dtype: DType,
        len: usize,
    ) -> Result<Tensor> {
        // Before numel, whose product would overflow on an absurd shape.
        Self::checked_bytes(gpu, shape, dtype)?;
        if len != numel(shape) {
            return Err(Error::shape(
                "Tensor::from_slice",
                format!(
                    "{len} values given for shape {shape:?} ({} elements)",
                    numel(shape)
                ),
            ));
        }
        let t = Self::alloc(gpu, shape, dtype, true)?;
        if !bytes.is_empty() {
            // write_buffer needs a multiple of 4 bytes (odd-length f16 data).
            if bytes.len().is_multiple_of(4) {
                gpu.queue().write_buffer(t.buffer(), 0, bytes);
            } else {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().next_multiple_of(4), 0);
                gpu.queue().write_buffer(t.buffer(), 0, &padded);
            }
        }
        Ok(t)
    }

    /// Uploads f32 `data` (row-major) as a tensor of `shape`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the length is not the shape's element count,
    /// [`Error::TooLarge`] when the tensor exceeds the device's buffer limit.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Self::upload(
            gpu,
            bytemuck::cast_slice(data),
            shape,
            DType::F32,
            data.len(),
        )
    }

    /// Uploads u32 `data` (token ids, row-major) as a tensor of `shape`; errors as
    /// [`Tensor::from_slice`].
    ///
    /// # Errors
    /// As [`Tensor::from_slice`].
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        Self::upload(
            gpu,
            bytemuck::cast_slice(data),
            shape,
            DType::U32,
            data.len(),
        )
    }

    /// f16 storage from f32 values (rounded to nearest half).
    ///
    /// # Errors
    /// [`ErrorKind::Device`](crate::ErrorKind::Device)
    /// ([`Error::Unsupported`]) when the adapter lacks shader-f16;
    /// otherwise as [`Tensor::from_slice`].
    pub fn from_f32_as_f16(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        if !gpu.features().shader_f16 {
            return Err(Error::Unsupported {
                feature: "shader-f16",
                adapter: gpu.adapter_info().name.clone(),
                hint: "keep this tensor in f32 on this adapter",
            });
        }
        let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
        Self::upload(
            gpu,
            bytemuck::cast_slice(&halves),
            shape,
            DType::F16,
            data.len(),
        )
    }

    /// Overwrites the values in place (f32 data; f16 tensors are rounded), e.g. to
    /// load weights into an existing parameter. The pending batch is submitted
    /// first, so commands encoded earlier still see the old values.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument):
    ///   [`Error::Shape`] when `data.len()` is not the element count,
    ///   [`Error::InvalidArgument`] for a u32 tensor.
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Gpu::flush`] (the pending batch is
    ///   submitted first).
    pub fn write_f32(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::Shape {
                op: "write_f32",
                detail: format!(
                    "{} values for a tensor of shape {:?} ({} values)",
                    data.len(),
                    self.shape,
                    self.numel()
                ),
            });
        }
        let bytes: Vec<u8> = match self.dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                bytemuck::cast_slice(&h).to_vec()
            }
            DType::U32 => {
                return Err(Error::invalid(
                    "write_f32",
                    "tensor holds u32 ids; use write_u32",
                ))
            }
        };
        self.write_bytes(bytes)
    }

    /// Overwrites u32 ids in place (see [`Tensor::write_f32`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) when the tensor is not u32
    /// or `data.len()` is not its element count; [`ErrorKind::Device`](crate::ErrorKind::Device) as
    /// [`Gpu::flush`].
    pub fn write_u32(&self, data: &[u32]) -> Result<()> {
        self.expect_dtype("write_u32", "tensor", DType::U32)?;
        if data.len() != self.numel() {
            return Err(Error::Shape {
                op: "write_u32",
                detail: format!(
                    "{} values for a tensor of shape {:?}",
                    data.len(),
                    self.shape
                ),
            });
        }
        self.write_bytes(bytemuck::cast_slice(data).to_vec())
    }

    fn write_bytes(&self, mut bytes: Vec<u8>) -> Result<()> {
        let gpu = self.gpu();
        gpu.flush()?;
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        if !bytes.is_empty() {
            gpu.queue().write_buffer(self.buffer(), self.offset, &bytes);
        }
        Ok(())
    }

    /// An f32 tensor of zeros.
    ///
    /// # Errors
    /// As [`Tensor::empty`].
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let t = Self::empty(gpu, shape, DType::F32)?;
        gpu.clear(&t);
        Ok(t)
    }

    /// An f32 tensor filled with `value`.
    ///
    /// # Errors
    /// As [`Tensor::from_slice`] (the size is checked before the values are
    /// built on the host).
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
        Self::from_slice(gpu, &vec![value; Self::host_numel(gpu, shape)?], shape)
    }

    /// An f32 tensor of ones.
    ///
    /// # Errors
    /// As [`Tensor::from_slice`].
    pub fn ones(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        Self::full(gpu, shape, 1.0)
    }

    /// Uniform in [lo, hi), reproducible from `seed` on every platform.
    ///
    /// # Errors
    /// As [`Tensor::from_slice`] (the size is checked before the values are
    /// built on the host).
    pub fn rand_uniform(gpu: &Gpu, shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let data: Vec<f32> = (0..Self::host_numel(gpu, shape)?)
            .map(|_| lo + (hi - lo) * rng.next_f32())
            .collect();
        Self::from_slice(gpu, &data, shape)
    }

    /// Normal(0, std^2), reproducible from `seed`.
    ///
    /// # Errors
    /// As [`Tensor::from_slice`] (the size is checked before the values are
    /// built on the host).
    pub fn randn(gpu: &Gpu, shape: &[usize], std: f32, seed: u64) -> Result<Tensor> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let data: Vec<f32> = (0..Self::host_numel(gpu, shape)?)
            .map(|_| std * rng.next_normal())
            .collect();
        Self::from_slice(gpu, &data, shape)
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Element count (the product of the shape).
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Size of dimension `i`; negative counts from the end (`-1` is the last).
    /// Panics when `i` is out of range, like slice indexing.
    pub fn dim(&self, i: isize) -> usize {
        let r = self.shape.len() as isize;
        let i = if i < 0 { r + i } else { i };
        self.shape[i as usize]
    }
    /// Size of the data in bytes.
    pub fn nbytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    /// The GPU the tensor lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.storage.gpu
    }

    /// Same buffer, new shape (same element count).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// ([`Error::Shape`]) when `shape` has another element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements != Some(self.numel()) {
            return Err(Error::shape(
                "reshape",
                format!("{:?} ({} elements) to {shape:?}", self.shape, self.numel()),
            ));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            offset: self.offset,
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// A view of `shape`'s elements starting at element `start` of this
    /// tensor's data (read as flat): it shares the buffer, and writes through
    /// either are seen by both. The start must fall on the device's storage
    /// binding alignment (`min_storage_buffer_offset_alignment`, 256 bytes on
    /// most adapters) for the view to be bound to a kernel.
    pub(crate) fn view(&self, start: usize, shape: &[usize]) -> Result<Tensor> {
        let size = self.dtype.size();
        let align = self.gpu().limits().min_storage_buffer_offset_alignment as u64;
        let offset = self.offset + (start * size) as u64;
        if start + numel(shape) > self.numel() || !offset.is_multiple_of(align) {
            return Err(Error::invalid(
                "Tensor::view",
                format!(
                    "{shape:?} at element {start} of {:?}: views stay inside the tensor and \
                     start on a multiple of {align} bytes",
                    self.shape
                ),
            ));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            offset,
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// True when both tensors use the same GPU buffer, whole or in views (a
    /// kernel cannot bind one buffer both read-only and read-write).
    pub fn shares_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// True when both tensors are the same elements: the same buffer from the
    /// same offset, the same byte size.
    pub(crate) fn same_elements(&self, other: &Tensor) -> bool {
        self.shares_buffer(other) && self.offset == other.offset && self.nbytes() == other.nbytes()
    }

    /// True when another tensor handle views the same buffer (in-place writes
    /// would be seen through it).
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.storage) > 1
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.storage.buffer.buffer
    }
    pub(crate) fn buffer_id(&self) -> u64 {
        self.storage.buffer.id
    }
    /// Where the tensor starts in its buffer, in bytes (0 unless a view).
    pub(crate) fn byte_offset(&self) -> u64 {
        self.offset
    }
    /// Bytes bound to a shader: the tensor rounded up to 16 (whole vec4s),
    /// inside its bucket.
    pub(crate) fn binding_size(&self) -> u64 {
        self.nbytes()
            .max(4)
            .next_multiple_of(16)
            .min(self.buffer().size() - self.offset)
    }

    /// Reads the values back as f32 (f16 is widened; u32 is an error).
    ///
    /// Async: submits the pending batch and waits for the map; works in the browser.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a u32 tensor (use
    ///   [`Tensor::to_vec_u32_async`]).
    /// - [`ErrorKind::Device`](crate::ErrorKind::Device) ([`Error::Gpu`]) when
    ///   wgpu reported an error since the last check (it may come from any work encoded before), or
    ///   mapping the buffer failed (device lost).
    pub async fn to_vec_async(&self) -> Result<Vec<f32>> {
        let bytes = self.gpu().read_bytes(self).await?;
        match self.dtype {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => {
                let h: Vec<half::f16> = bytemuck::pod_collect_to_vec(&bytes);
                Ok(h.into_iter().map(f32::from).collect())
            }
            DType::U32 => Err(Error::invalid("to_vec", "tensor holds u32; use to_vec_u32")),
        }
    }

    /// Reads a u32 tensor back (submits pending work first); works in the browser.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) unless the tensor is u32;
    /// [`ErrorKind::Device`](crate::ErrorKind::Device) as [`Tensor::to_vec_async`].
    pub async fn to_vec_u32_async(&self) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            return Err(Error::invalid(
                "to_vec_u32",
                format!("tensor holds {:?}", self.dtype),
            ));
        }
        Ok(bytemuck::pod_collect_to_vec(
            &self.gpu().read_bytes(self).await?,
        ))
    }

    /// Blocking readback (native).
    ///
    /// # Errors
    /// As [`Tensor::to_vec_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.to_vec_async())
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Blocking form of [`Tensor::to_vec_u32_async`] (native only).
    ///
    /// # Errors
    /// As [`Tensor::to_vec_u32_async`].
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        pollster::block_on(self.to_vec_u32_async())
    }

    /// Fails with a shape error unless `self` has exactly `shape`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// ([`Error::Shape`], naming `op` and `name`) when the shapes differ.
    pub fn expect_shape(&self, op: &'static str, name: &str, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(Error::shape(
                op,
                format!("{name} has shape {:?}, expected {shape:?}", self.shape),
            ));
        }
        Ok(())
    }

    /// Fails unless `self` holds `dtype`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument), naming `op` and `name`,
    /// when the dtypes differ.
    pub fn expect_dtype(&self, op: &'static str, name: &str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::invalid(
                op,
                format!("{name} holds {:?}, expected {dtype:?}", self.dtype),
            ));
        }
        Ok(())
    }
}
