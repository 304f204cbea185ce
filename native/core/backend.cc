// Default implementations of the Backend's fused optimizer stages, built from its
// primitives (a device backend may override them with fused kernels; the CPU backend does).
// Each is the same chain of single ops the optimizers ran before the stages were fused,
// so a backend that keeps the defaults rounds exactly as before.
#include <memory>

#include "backend.h"

namespace krad {
namespace {

// A temporary device buffer, released at scope exit.
class Temp {
 public:
  Temp(Backend* b) : b_(b) {}
  ~Temp() {
    if (p_) b_->release(p_);
  }
  Temp(const Temp&) = delete;
  Temp& operator=(const Temp&) = delete;
  Status get(size_t bytes) {
    if (p_) b_->release(p_);
    p_ = nullptr;
    return b_->allocate(bytes ? bytes : 1, &p_);
  }
  void* ptr() const { return p_; }

 private:
  Backend* b_;
  void* p_ = nullptr;
};

Status copy_if_distinct(Backend* b, void* dst, const void* src, size_t bytes) {
  return dst == src ? Status::Ok() : b->copy(dst, src, bytes);
}

Status finite_of(Backend* b, DType dt, const void* x, int64_t count, bool* ok) {
  std::vector<uint8_t> f;
  KRAD_RETURN_IF_ERROR(b->all_finite(dt, x, 1, count, &f));
  *ok = *ok && f[0] == 1;
  return Status::Ok();
}

}  // namespace

Status Backend::axpby_out_many(const std::vector<Axpby3>& spans, double a, double b) {
  for (const Axpby3& s : spans) {
    KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.z, s.y, static_cast<size_t>(s.count) * dtype_size(s.dt)));
    KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, a, s.x, nullptr, b, s.z));
  }
  return Status::Ok();
}

Status Backend::update_many(const std::vector<UpdateSpan>& spans, const UpdateParams& p, std::vector<uint8_t>* finite) {
  finite->assign(spans.size(), 1);
  for (size_t j = 0; j < spans.size(); ++j) {
    const UpdateSpan& s = spans[j];
    const size_t bytes = static_cast<size_t>(s.count) * dtype_size(s.dt);
    Temp dd(this), uu(this);
    KRAD_RETURN_IF_ERROR(dd.get(bytes));
    KRAD_RETURN_IF_ERROR(copy(dd.ptr(), s.d, bytes));
    if (p.l2) KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, p.wd, s.w, nullptr, 1.0, dd.ptr()));
    const void* u = dd.ptr();
    if (p.mu > 0) {
      KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.m_out, s.m, bytes));
      KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, 1.0, dd.ptr(), nullptr, p.mu, s.m_out));
      u = s.m_out;
      if (p.nesterov && !p.ext) {
        KRAD_RETURN_IF_ERROR(uu.get(bytes));
        KRAD_RETURN_IF_ERROR(copy(uu.ptr(), dd.ptr(), bytes));
        KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, p.mu, s.m_out, nullptr, 1.0, uu.ptr()));
        u = uu.ptr();
      }
    }
    if (p.ext) u = s.u;
    KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.w_out, s.w, bytes));
    if (p.decoupled) KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, 0.0, s.w_out, nullptr, 1 - p.lr * p.wd, s.w_out));
    KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, -p.lr, u, nullptr, 1.0, s.w_out));
    bool ok = true;
    KRAD_RETURN_IF_ERROR(finite_of(this, s.dt, s.w_out, s.count, &ok));
    if (p.mu > 0) KRAD_RETURN_IF_ERROR(finite_of(this, s.dt, s.m_out, s.count, &ok));
    (*finite)[j] = ok;
  }
  return Status::Ok();
}

Status Backend::adam_many(const std::vector<AdamSpan>& spans, const AdamParams& p, std::vector<uint8_t>* finite) {
  finite->assign(spans.size(), 1);
  for (size_t j = 0; j < spans.size(); ++j) {
    const AdamSpan& s = spans[j];
    const size_t bytes = static_cast<size_t>(s.count) * dtype_size(s.dt);
    const size_t n = static_cast<size_t>(s.count);
    Temp gg(this), dir(this);
    KRAD_RETURN_IF_ERROR(gg.get(bytes));
    KRAD_RETURN_IF_ERROR(dir.get(bytes));
    KRAD_RETURN_IF_ERROR(copy(gg.ptr(), s.g, bytes));
    if (p.l2) KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, p.wd, s.w, nullptr, 1.0, gg.ptr()));
    KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.w_out, s.w, bytes));
    if (p.decoupled) KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, 0.0, s.w_out, nullptr, 1 - p.lr * p.wd, s.w_out));
    KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.m_out, s.m, bytes));
    KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, 1 - p.b1, gg.ptr(), nullptr, p.b1, s.m_out));
    KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.v_out, s.v, bytes));
    KRAD_RETURN_IF_ERROR(mul_acc(s.dt, n, p.b2, 1 - p.b2, gg.ptr(), gg.ptr(), s.v_out));
    KRAD_RETURN_IF_ERROR(div_sqrt(s.dt, n, s.m_out, s.v_out, 1 / p.bc2, p.eps, dir.ptr()));
    KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, -p.lr / p.bc1, dir.ptr(), nullptr, 1.0, s.w_out));
    bool ok = true;
    KRAD_RETURN_IF_ERROR(finite_of(this, s.dt, s.w_out, s.count, &ok));
    KRAD_RETURN_IF_ERROR(finite_of(this, s.dt, s.m_out, s.count, &ok));
    KRAD_RETURN_IF_ERROR(finite_of(this, s.dt, s.v_out, s.count, &ok));
    (*finite)[j] = ok;
  }
  return Status::Ok();
}

Status Backend::graft_many(Graft kind, const std::vector<GraftSpan>& spans, const GraftParams& p) {
  for (const GraftSpan& s : spans) {
    const size_t bytes = static_cast<size_t>(s.count) * dtype_size(s.dt);
    const size_t n = static_cast<size_t>(s.count);
    KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.acc_out, s.acc, bytes));
    if (kind == Graft::ADAGRAD) {
      KRAD_RETURN_IF_ERROR(mul_acc(s.dt, n, 1.0, 1.0, s.g, s.g, s.acc_out));
      KRAD_RETURN_IF_ERROR(div_sqrt(s.dt, n, s.g, s.acc_out, 1.0, p.eps, s.dir));
    } else {
      KRAD_RETURN_IF_ERROR(copy_if_distinct(this, s.mom_out, s.mom, bytes));
      KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, 1 - p.b1, s.g, nullptr, p.b1, s.mom_out));
      KRAD_RETURN_IF_ERROR(mul_acc(s.dt, n, p.b2, 1 - p.b2, s.g, s.g, s.acc_out));
      KRAD_RETURN_IF_ERROR(div_sqrt(s.dt, n, s.mom_out, s.acc_out, 1 / p.bc2, p.eps, s.dir));
      KRAD_RETURN_IF_ERROR(axpby(s.dt, 1, s.count, nullptr, 0.0, s.dir, nullptr, 1 / p.bc1, s.dir));
    }
  }
  return Status::Ok();
}

}  // namespace krad
