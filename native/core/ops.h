// Backend-neutral tensor operations, written once against the Backend primitives. Each
// validates shapes/dtypes/backends and returns a Status; none touches N-API or CUDA.
#pragma once
#include <vector>

#include "tensor.h"

namespace krad {

// C = alpha * op(A) op(B) + beta * C over the batch. A: [bA, m, k] (or [bA, k, m] when
// trans_a), B likewise; bA and bB are either C's batch or 1 (broadcast).
Status gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b, double alpha,
            double beta);

// H = alpha * G_(mode) G_(mode)^T + beta * H: the contraction of G with itself over every
// axis but `mode`. G: [b, d0..d_{k-1}], H: [b, d_mode, d_mode].
Status gram(const Tensor& g, int mode, Tensor& h, double alpha, double beta);

// out_(mode) = op(M) G_(mode): the mode-`mode` product. M: [b or 1, n_out, d_mode] (or
// [.., d_mode, n_out] when trans_m); out has G's shape with d_mode replaced by n_out.
// Contracting axis `mode` of G with axis 0 of P (tensordot) is trans_m = true.
Status mode_product(const Tensor& g, int mode, const Tensor& m, Tensor& out, bool trans_m);

// Batched symmetric eigendecomposition (lower triangle read). w: [b, n] ascending,
// v: [b, n, n] with eigenvectors in columns. info[b] > 0 marks items that failed.
Status eigh(const Tensor& a, Tensor& w, Tensor& v, std::vector<int>* info);

// out = V diag(max(w, floor)^p) V^T where (w, V) = eigh(A + ridge I). Items whose eigh
// failed (info[b] > 0) are left as they were in `out`, so a caller keeps its previous root;
// so are items whose power is not finite (info[b] = kNonFiniteResult): p < 0 with a floor
// that is 0 in the dtype (below float32's smallest positive value), or an overflow.
constexpr int kNonFiniteResult = -1;
Status matpow(const Tensor& a, double p, double floor, double ridge, Tensor& out,
              std::vector<int>* info);

// y = alpha_b x + beta_b y (alphas/betas: empty = scalar for every item, else one per item).
Status axpby(const Tensor& x, Tensor& y, const std::vector<double>& alphas, double alpha,
             const std::vector<double>& betas, double beta);
Status scale(Tensor& x, const std::vector<double>& alphas, double alpha);
Status add_identity(Tensor& a, const std::vector<double>& alphas, double alpha);
Status symmetrize(Tensor& a);
Status copy(const Tensor& src, Tensor& dst);  // same numel; casts when dtypes differ
Status fill(Tensor& x, double value);
// acc = a acc + b x y
Status mul_acc(const Tensor& x, const Tensor& y, Tensor& acc, double a, double b);
// out = x / (sqrt(acc * scale) + eps)
Status div_sqrt(const Tensor& x, const Tensor& acc, Tensor& out, double scale, double eps);

Status dot(const Tensor& x, const Tensor& y, std::vector<double>* out);  // per item
Status frob_norm(const Tensor& x, std::vector<double>* out);             // per item
Status trace(const Tensor& a, std::vector<double>* out);                 // per item, square items
Status all_finite(const Tensor& x, std::vector<uint8_t>* out);           // per item

// d_b *= ||a_b|| / (||d_b|| + eps) per item (norm grafting).
Status scale_by_norm_ratio(Tensor& d, const Tensor& a, double eps);
// L_b -= T_b / s_b, s_b = n (1 + tr(M_b)) or 1 + ||M_b||_F (KrADagrad's inverse update).
Status inverse_update(Tensor& l, const Tensor& t, const Tensor& m, Backend::Normalizer kind);
// Per tensor: 1 when it has no NaN/Inf (one synchronization for all).
Status all_finite_many(const std::vector<const Tensor*>& xs, std::vector<uint8_t>* out);

// Gather (scatter = false) the boxes at `offsets` (nbox x rank, flattened) of the single
// item tensor `full` (batch 1) into items first .. first+nbox-1 of `blocks` (item shape =
// box dims), or scatter them back (scatter = true).
Status boxes(Tensor& full, Tensor& blocks, const std::vector<int64_t>& offsets, bool scatter, int64_t first = 0);

// Multi-tensor forms of the per-parameter ops (the optimizers' "foreach" work): entry i
// of each list pairs up; entries may differ in dtype and size but must not overlap one
// another (a backend may run them in any order, fused). Every entry is checked before any
// runs (a bad entry changes nothing; its index is in the message and info).
Status axpby_many(const std::vector<const Tensor*>& xs, const std::vector<Tensor*>& ys, double alpha, double beta);
Status copy_many(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts);
Status mul_acc_many(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
                    const std::vector<Tensor*>& accs, double a, double b);
Status div_sqrt_many(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& accs,
                     const std::vector<Tensor*>& outs, double scale, double eps);
Status scale_by_norm_ratio_many(const std::vector<Tensor*>& ds, const std::vector<const Tensor*>& as, double eps);
// boxes() for several full tensors into (or out of) one blocks tensor: entry i moves the
// boxes at offsets[i] of fulls[i] to items firsts[i].. of blocks.
Status boxes_many(const std::vector<Tensor*>& fulls, Tensor& blocks, const std::vector<std::vector<int64_t>>& offsets,
                  const std::vector<int64_t>& firsts, bool scatter);

// ---- root refresh (roots.cc) -----------------------------------------------------------
// How a batch of factor roots A^p is computed: `newton` tries the GEMM-only coupled Newton
// iteration first (p = +-1/r only; `max_iterations` / `tolerance` <= 0 take the defaults 40
// and 1e-5 (float32) / 1e-12 (float64), relative to sqrt(n)); eigh (matpow with `floor`
// and `ridge`) takes what it leaves; float32 items that still fail are retried in float64
// when `retry_float64`; anything that fails after that keeps the previous root.
struct RootSpec {
  double p = 0, floor = 0, ridge = 0;
  bool newton = false;
  int max_iterations = 0;
  double tolerance = 0;
  bool retry_float64 = true;
};
// out = roots of `a` per item, or prev's item where every method failed (info[b] != 0 then).
// out may be prev; it must not alias a.
Status root(const Tensor& a, const Tensor& prev, Tensor& out, const RootSpec& spec, std::vector<int>* info);
// The Newton part alone (info[b] = 0 where it converged and wrote out's item b).
Status newton_root(const Tensor& a, const Tensor& prev, Tensor& out, const RootSpec& spec, std::vector<int>* info);

// ---- fused optimizer stages (out of place; see Backend::update_many and friends). Every
// entry is checked before any runs. `finite` gets, per entry, whether what it wrote is finite.
struct UpdateEntry {
  const Tensor* d;
  const Tensor* m;  // null without momentum
  const Tensor* w;
  const Tensor* u;  // external direction, or null
  Tensor* m_out;    // null without momentum
  Tensor* w_out;
};
Status update_many(const std::vector<UpdateEntry>& entries, const Backend::UpdateParams& p, std::vector<uint8_t>* finite);
struct AdamEntry {
  const Tensor *g, *m, *v, *w;
  Tensor *m_out, *v_out, *w_out;
};
Status adam_many(const std::vector<AdamEntry>& entries, const Backend::AdamParams& p, std::vector<uint8_t>* finite);
struct GraftEntry {
  const Tensor* g;
  const Tensor* acc;
  const Tensor* mom;  // ADAM only
  Tensor* acc_out;
  Tensor* mom_out;    // ADAM only
  Tensor* dir;
};
Status graft_many(Backend::Graft kind, const std::vector<GraftEntry>& entries, const Backend::GraftParams& p);
// zs[i] = a xs[i] + b ys[i]
Status axpby_out_many(const std::vector<const Tensor*>& xs, const std::vector<const Tensor*>& ys,
                      const std::vector<Tensor*>& zs, double a, double b);

// Element count of `batch` items of `shape`, or an error when a dimension is < 1 or the
// count passes 2^53 (beyond that a JS number, and a size_t of bytes, cannot hold it exactly).
Status checked_numel(int64_t batch, const std::vector<int64_t>& shape, int64_t* out);

}  // namespace krad
