// A backend-owned tensor: `batch` items of the same row-major shape, back to back in one
// buffer. Shape is per item; rank 0 (a scalar item) is allowed.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend.h"

namespace krad {

// A backend buffer, shared by a tensor and its reshaped views; freed with the last one.
class Storage {
 public:
  Storage(Backend* backend, void* data, size_t bytes) : backend_(backend), data_(data), bytes_(bytes) {}
  ~Storage() {
    if (data_) backend_->release(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  Backend* backend_;
  void* data_;
  size_t bytes_;
};

class Tensor {
 public:
  Tensor(Backend* backend, DType dtype, int64_t batch, std::vector<int64_t> shape,
         std::shared_ptr<Storage> storage)
      : backend_(backend), dtype_(dtype), batch_(batch), shape_(std::move(shape)),
        storage_(std::move(storage)) {}
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  Backend* backend() const { return backend_; }
  DType dtype() const { return dtype_; }
  int64_t batch() const { return batch_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t item_numel() const {
    int64_t n = 1;
    for (auto d : shape_) n *= d;
    return n;
  }
  int64_t numel() const { return batch_ * item_numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  void* data() const { return storage_->data(); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  std::string describe() const;  // e.g. "float32 batch 4 of [16, 16]"

 private:
  Backend* backend_;
  DType dtype_;
  int64_t batch_;
  std::vector<int64_t> shape_;
  std::shared_ptr<Storage> storage_;
};

using TensorPtr = std::shared_ptr<Tensor>;

// Allocates a zero-filled tensor. Dims must be >= 1, batch >= 1.
Status make_tensor(Backend* backend, DType dtype, int64_t batch, const std::vector<int64_t>& shape,
                   TensorPtr* out);
// A view of the same storage with another batch/shape of equal element count.
Status reshape(const TensorPtr& t, int64_t batch, const std::vector<int64_t>& shape, TensorPtr* out);

}  // namespace krad
