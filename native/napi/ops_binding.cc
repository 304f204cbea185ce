#include "ops_binding.h"

#include <cmath>
#include <functional>
#include <limits>
#include <memory>

#include "../core/crc32c.h"
#include "../core/ops.h"
#include "args.h"
#include "backends.h"
#include "errors.h"
#include "job.h"
#include "tensor_handle.h"

namespace krad_napi {
namespace {

using krad::TensorPtr;

TensorPtr T(const Napi::CallbackInfo& info, size_t i, const char* what) {
  return TensorHandle::Get(info.Env(), i < info.Length() ? info[i] : info.Env().Undefined(), what);
}

krad::Backend* backend_arg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  Napi::Value v = i < info.Length() ? info[i] : env.Undefined();
  if (!v.IsString())
    throw_error(env, "INVALID_ARGUMENT", "Expected a backend name ('cpu' or 'cuda') but received " + describe_value(v));
  std::string reason;
  krad::Backend* b = find_backend(v.As<Napi::String>().Utf8Value(), &reason);
  if (!b) throw_error(env, "BACKEND_UNAVAILABLE", reason);
  return b;
}

// A mode index; values outside int range are rejected here, not truncated by the cast.
int mode_arg(const Napi::CallbackInfo& info, size_t i) {
  int64_t mode = int_arg(info.Env(), info, i, "mode");
  if (mode < std::numeric_limits<int>::min() || mode > std::numeric_limits<int>::max())
    throw_error(info.Env(), "INVALID_ARGUMENT", "mode " + std::to_string(mode) + " is out of range");
  return static_cast<int>(mode);
}

Napi::Value to_js(Napi::Env env, const std::vector<double>& v) {
  Napi::Float64Array a = Napi::Float64Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = v[i];
  return a;
}
Napi::Value to_js(Napi::Env env, const std::vector<int>& v) {
  Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = v[i];
  return a;
}

// backends() -> [{name, available, reason, device}]
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto list = list_backends();
  Napi::Array out = Napi::Array::New(env, list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", list[i].name);
    o.Set("available", list[i].backend != nullptr);
    o.Set("reason", list[i].reason);
    o.Set("device", list[i].backend ? list[i].backend->device() : std::string());
    out.Set(i, o);
  }
  return out;
}

// tensor(backend, dtype, batch, shape) -> zero tensor
Napi::Value NewTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  krad::Backend* b = backend_arg(info, 0);
  krad::DType dt = dtype_arg(env, info.Length() > 1 ? info[1] : env.Undefined(), "dtype");
  int64_t batch = int_arg(env, info, 2, "batch");
  auto shape = shape_arg(env, info.Length() > 3 ? info[3] : env.Undefined(), "shape");
  TensorPtr t;
  check(env, krad::make_tensor(b, dt, batch, shape, &t));
  return TensorHandle::Wrap(env, t);
}

// fromArray(backend, data, batch, shape) -> tensor holding a copy of data
Napi::Value FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  krad::Backend* b = backend_arg(info, 0);
  Napi::TypedArray data = typed_array_arg(env, info.Length() > 1 ? info[1] : env.Undefined(), "data");
  int64_t batch = int_arg(env, info, 2, "batch");
  auto shape = shape_arg(env, info.Length() > 3 ? info[3] : env.Undefined(), "shape");
  int64_t n = 0;
  check(env, krad::checked_numel(batch, shape, &n));
  if (static_cast<int64_t>(data.ElementLength()) != n)
    throw_error(env, "SHAPE_MISMATCH", "fromArray: batch x shape needs " + std::to_string(n) +
                                           " elements but the array has " + std::to_string(data.ElementLength()));
  TensorPtr t;
  check(env, krad::make_tensor(b, dtype_of(data), batch, shape, &t));
  check(env, b->upload(t->data(), typed_data(data), t->bytes()));
  return TensorHandle::Wrap(env, t);
}

// gemm(a, b, c, transA = false, transB = false, alpha = 1, beta = 0)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto a = T(info, 0, "A"), b = T(info, 1, "B"), c = T(info, 2, "C");
  const bool ta = bool_or(env, info, 3, "transA", false), tb = bool_or(env, info, 4, "transB", false);
  const double alpha = number_or(env, info, 5, "alpha", 1.0), beta = number_or(env, info, 6, "beta", 0.0);
  Dispatch(env, [=](JobCtx&) { return krad::gemm(*a, *b, *c, ta, tb, alpha, beta); });
  return env.Undefined();
}

// gram(g, mode, h, alpha = 1, beta = 0)
Napi::Value Gram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = T(info, 0, "G");
  int mode = mode_arg(info, 1);
  auto h = T(info, 2, "H");
  const double alpha = number_or(env, info, 3, "alpha", 1.0), beta = number_or(env, info, 4, "beta", 0.0);
  Dispatch(env, [=](JobCtx&) { return krad::gram(*g, mode, *h, alpha, beta); });
  return env.Undefined();
}

// modeProduct(g, mode, m, out, transM = false)
Napi::Value ModeProduct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = T(info, 0, "G");
  int mode = mode_arg(info, 1);
  auto m = T(info, 2, "M"), out = T(info, 3, "out");
  const bool tm = bool_or(env, info, 4, "transM", false);
  Dispatch(env, [=](JobCtx&) { return krad::mode_product(*g, mode, *m, *out, tm); });
  return env.Undefined();
}

// Runs `fn` now (returns the info array) or on the libuv pool (a promise of it). The
// captured TensorPtrs keep the buffers alive even if their handles are disposed meanwhile.
template <typename Fn>
Napi::Value run_info(const Napi::CallbackInfo& info, bool async, const char* op, Fn fn) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, op);
  if (!async) {
    std::vector<int> out;
    check(env, fn(&out));
    return to_js(env, out);
  }
  struct R {
    krad::Status status;
    std::vector<int> info;
  };
  auto r = std::make_shared<R>();
  return QueueWork(
      env, "kradagrad.linalg", [r, fn]() { r->status = fn(&r->info); },
      [r](Napi::Env e) -> Napi::Value {
        if (!r->status.ok()) throw status_error(e, r->status);
        return to_js(e, r->info);
      });
}

// eigh(a, w, v) -> Int32Array info (0 = ok per item); eighAsync -> Promise of the same
Napi::Value EighImpl(const Napi::CallbackInfo& info, bool async) {
  auto a = T(info, 0, "A"), w = T(info, 1, "W"), v = T(info, 2, "V");
  return run_info(info, async, "eigh", [a, w, v](std::vector<int>* out) { return krad::eigh(*a, *w, *v, out); });
}
Napi::Value Eigh(const Napi::CallbackInfo& info) { return EighImpl(info, false); }
Napi::Value EighAsync(const Napi::CallbackInfo& info) { return EighImpl(info, true); }

// matpow(a, p, floor, ridge, out) -> Int32Array info; matpowAsync -> Promise
Napi::Value MatpowImpl(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  auto a = T(info, 0, "A");
  double p = number_arg(env, info, 1, "exponent");
  double floor = number_arg(env, info, 2, "floor");
  double ridge = number_arg(env, info, 3, "ridge");
  auto out = T(info, 4, "out");
  return run_info(info, async, "matpow", [=](std::vector<int>* inf) { return krad::matpow(*a, p, floor, ridge, *out, inf); });
}
Napi::Value Matpow(const Napi::CallbackInfo& info) { return MatpowImpl(info, false); }
Napi::Value MatpowAsync(const Napi::CallbackInfo& info) { return MatpowImpl(info, true); }

// axpby(x, y, alpha, beta): y = alpha x + beta y; alpha/beta numbers or per-item arrays
Napi::Value Axpby(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x"), y = T(info, 1, "y");
  double a, b;
  std::vector<double> as, bs;
  coeff_arg(env, info, 2, "alpha", 1.0, &a, &as);
  coeff_arg(env, info, 3, "beta", 1.0, &b, &bs);
  Dispatch(env, [=](JobCtx&) { return krad::axpby(*x, *y, as, a, bs, b); });
  return env.Undefined();
}

// scale(x, alpha)
Napi::Value Scale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x");
  double a;
  std::vector<double> as;
  coeff_arg(env, info, 1, "alpha", 1.0, &a, &as);
  Dispatch(env, [=](JobCtx&) { return krad::scale(*x, as, a); });
  return env.Undefined();
}

// addIdentity(a, alpha)
Napi::Value AddIdentity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "A");
  double a;
  std::vector<double> as;
  coeff_arg(env, info, 1, "alpha", 1.0, &a, &as);
  Dispatch(env, [=](JobCtx&) { return krad::add_identity(*x, as, a); });
  return env.Undefined();
}

Napi::Value Symmetrize(const Napi::CallbackInfo& info) {
  auto a = T(info, 0, "A");
  Dispatch(info.Env(), [=](JobCtx&) { return krad::symmetrize(*a); });
  return info.Env().Undefined();
}

// copy(src, dst): same element count, casts between dtypes
Napi::Value Copy(const Napi::CallbackInfo& info) {
  auto s = T(info, 0, "src"), d = T(info, 1, "dst");
  Dispatch(info.Env(), [=](JobCtx&) { return krad::copy(*s, *d); });
  return info.Env().Undefined();
}

Napi::Value Fill(const Napi::CallbackInfo& info) {
  auto x = T(info, 0, "x");
  const double v = number_arg(info.Env(), info, 1, "value");
  Dispatch(info.Env(), [=](JobCtx&) { return krad::fill(*x, v); });
  return info.Env().Undefined();
}

// mulAcc(x, y, acc, a, b): acc = a acc + b x y
Napi::Value MulAcc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x"), y = T(info, 1, "y"), acc = T(info, 2, "acc");
  const double a = number_arg(env, info, 3, "a"), b = number_arg(env, info, 4, "b");
  Dispatch(env, [=](JobCtx&) { return krad::mul_acc(*x, *y, *acc, a, b); });
  return env.Undefined();
}

// divSqrt(x, acc, out, scale, eps): out = x / (sqrt(acc scale) + eps)
Napi::Value DivSqrt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x"), acc = T(info, 1, "acc"), out = T(info, 2, "out");
  const double sc = number_arg(env, info, 3, "scale"), eps = number_arg(env, info, 4, "eps");
  Dispatch(env, [=](JobCtx&) { return krad::div_sqrt(*x, *acc, *out, sc, eps); });
  return env.Undefined();
}

Napi::Value Dot(const Napi::CallbackInfo& info) {
  ImmediateOnly(info.Env(), "dot");
  std::vector<double> out;
  check(info.Env(), krad::dot(*T(info, 0, "x"), *T(info, 1, "y"), &out));
  return to_js(info.Env(), out);
}
Napi::Value FrobNorm(const Napi::CallbackInfo& info) {
  ImmediateOnly(info.Env(), "frobNorm");
  std::vector<double> out;
  check(info.Env(), krad::frob_norm(*T(info, 0, "x"), &out));
  return to_js(info.Env(), out);
}
Napi::Value Trace(const Napi::CallbackInfo& info) {
  ImmediateOnly(info.Env(), "trace");
  std::vector<double> out;
  check(info.Env(), krad::trace(*T(info, 0, "A"), &out));
  return to_js(info.Env(), out);
}
Napi::Value AllFinite(const Napi::CallbackInfo& info) {
  ImmediateOnly(info.Env(), "allFinite");
  std::vector<uint8_t> out;
  check(info.Env(), krad::all_finite(*T(info, 0, "x"), &out));
  Napi::Uint8Array a = Napi::Uint8Array::New(info.Env(), out.size());
  for (size_t i = 0; i < out.size(); ++i) a[i] = out[i];
  return a;
}

// boxes(full, blocks, offsets, scatter = false, first = 0)
Napi::Value Boxes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto full = T(info, 0, "full"), blocks = T(info, 1, "blocks");
  auto offsets = int_list_arg(env, info.Length() > 2 ? info[2] : env.Undefined(), "offsets");
  int64_t first = info.Length() > 4 && !info[4].IsUndefined() ? int_arg(env, info, 4, "first") : 0;
  const bool scatter = bool_or(env, info, 3, "scatter", false);
  Dispatch(env, [=](JobCtx&) { return krad::boxes(*full, *blocks, offsets, scatter, first); });
  return env.Undefined();
}

// scaleByNormRatio(d, a, eps): d_b *= ||a_b|| / (||d_b|| + eps)
Napi::Value ScaleByNormRatio(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = T(info, 0, "d"), a = T(info, 1, "a");
  const double eps = number_arg(env, info, 2, "eps");
  Dispatch(env, [=](JobCtx&) { return krad::scale_by_norm_ratio(*d, *a, eps); });
  return env.Undefined();
}

// inverseUpdate(L, T, M, kind): L_b -= T_b / s_b, kind 'trace' (s = n (1 + tr M)) or 'frobenius' (s = 1 + ||M||)
Napi::Value InverseUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto l = T(info, 0, "L"), t = T(info, 1, "T"), m = T(info, 2, "M");
  Napi::Value k = info.Length() > 3 ? info[3] : env.Undefined();
  std::string kind = k.IsString() ? k.As<Napi::String>().Utf8Value() : "";
  if (kind != "trace" && kind != "frobenius")
    throw_error(env, "INVALID_ARGUMENT", "Expected 'trace' or 'frobenius' for kind but received " + describe_value(k));
  const auto norm = kind == "trace" ? krad::Backend::Normalizer::TRACE : krad::Backend::Normalizer::FROBENIUS;
  Dispatch(env, [=](JobCtx&) { return krad::inverse_update(*l, *t, *m, norm); });
  return env.Undefined();
}

// allFiniteMany([tensors]) -> Uint8Array, one entry per tensor
Napi::Value AllFiniteMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "allFiniteMany");
  if (info.Length() < 1 || !info[0].IsArray())
    throw_error(env, "INVALID_ARGUMENT", "Expected an array of tensors but received " +
                                             describe_value(info.Length() ? info[0] : env.Undefined()));
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<TensorPtr> keep;
  std::vector<const krad::Tensor*> xs;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    keep.push_back(TensorHandle::Get(env, arr.Get(i), "allFiniteMany element"));
    xs.push_back(keep.back().get());
  }
  std::vector<uint8_t> out;
  check(env, krad::all_finite_many(xs, &out));
  Napi::Uint8Array a = Napi::Uint8Array::New(env, out.size());
  for (size_t i = 0; i < out.size(); ++i) a[i] = out[i];
  return a;
}

// ---- multi-tensor forms -------------------------------------------------------------
// An array argument of tensor handles; `keep` holds them alive for the call.
struct TensorList {
  std::vector<TensorPtr> keep;
  std::vector<const krad::Tensor*> in() const {
    std::vector<const krad::Tensor*> v;
    for (auto& t : keep) v.push_back(t.get());
    return v;
  }
  std::vector<krad::Tensor*> out() const {
    std::vector<krad::Tensor*> v;
    for (auto& t : keep) v.push_back(t.get());
    return v;
  }
};
TensorList tensor_list(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Env env = info.Env();
  Napi::Value v = i < info.Length() ? info[i] : env.Undefined();
  if (!v.IsArray())
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected an array of tensors for ") + what + " but received " +
                                             describe_value(v));
  Napi::Array arr = v.As<Napi::Array>();
  TensorList l;
  l.keep.reserve(arr.Length());
  const std::string elem = std::string(what) + " element";
  for (uint32_t k = 0; k < arr.Length(); ++k) l.keep.push_back(TensorHandle::Get(env, arr.Get(k), elem.c_str()));
  return l;
}

// axpbyMany(xs, ys, alpha, beta): ys[i] = alpha xs[i] + beta ys[i]
Napi::Value AxpbyMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto xs = tensor_list(info, 0, "xs"), ys = tensor_list(info, 1, "ys");
  const double a = number_arg(env, info, 2, "alpha"), b = number_arg(env, info, 3, "beta");
  Dispatch(env, [=](JobCtx&) { return krad::axpby_many(xs.in(), ys.out(), a, b); });
  return env.Undefined();
}
// copyMany(srcs, dsts)
Napi::Value CopyMany(const Napi::CallbackInfo& info) {
  auto s = tensor_list(info, 0, "srcs"), d = tensor_list(info, 1, "dsts");
  Dispatch(info.Env(), [=](JobCtx&) { return krad::copy_many(s.in(), d.out()); });
  return info.Env().Undefined();
}
// mulAccMany(xs, ys, accs, a, b): accs[i] = a accs[i] + b xs[i] ys[i]
Napi::Value MulAccMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto xs = tensor_list(info, 0, "xs"), ys = tensor_list(info, 1, "ys"), accs = tensor_list(info, 2, "accs");
  const double a = number_arg(env, info, 3, "a"), b = number_arg(env, info, 4, "b");
  Dispatch(env, [=](JobCtx&) { return krad::mul_acc_many(xs.in(), ys.in(), accs.out(), a, b); });
  return env.Undefined();
}
// divSqrtMany(xs, accs, outs, scale, eps): outs[i] = xs[i] / (sqrt(accs[i] scale) + eps)
Napi::Value DivSqrtMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto xs = tensor_list(info, 0, "xs"), accs = tensor_list(info, 1, "accs"), outs = tensor_list(info, 2, "outs");
  const double sc = number_arg(env, info, 3, "scale"), eps = number_arg(env, info, 4, "eps");
  Dispatch(env, [=](JobCtx&) { return krad::div_sqrt_many(xs.in(), accs.in(), outs.out(), sc, eps); });
  return env.Undefined();
}
// scaleByNormRatioMany(ds, as, eps)
Napi::Value ScaleByNormRatioMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ds = tensor_list(info, 0, "ds"), as = tensor_list(info, 1, "as");
  const double eps = number_arg(env, info, 2, "eps");
  Dispatch(env, [=](JobCtx&) { return krad::scale_by_norm_ratio_many(ds.out(), as.in(), eps); });
  return env.Undefined();
}
// boxesMany(fulls, blocks, offsets (one flat array per full), firsts, scatter)
Napi::Value BoxesMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto fulls = tensor_list(info, 0, "fulls");
  auto blocks = T(info, 1, "blocks");
  Napi::Value ov = info.Length() > 2 ? info[2] : env.Undefined();
  if (!ov.IsArray())
    throw_error(env, "INVALID_ARGUMENT", "Expected an array of offset arrays but received " + describe_value(ov));
  Napi::Array oa = ov.As<Napi::Array>();
  std::vector<std::vector<int64_t>> offsets;
  for (uint32_t k = 0; k < oa.Length(); ++k) offsets.push_back(int_list_arg(env, oa.Get(k), "offsets element"));
  auto firsts = int_list_arg(env, info.Length() > 3 ? info[3] : env.Undefined(), "firsts");
  const bool scatter = bool_or(env, info, 4, "scatter", false);
  Dispatch(env, [=](JobCtx&) { return krad::boxes_many(fulls.out(), *blocks, offsets, firsts, scatter); });
  return env.Undefined();
}

// ---- root refresh, guards and the fused final stages ----------------------------------
Napi::Object object_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Env env = info.Env();
  Napi::Value v = i < info.Length() ? info[i] : env.Undefined();
  if (!v.IsObject() || v.IsArray())
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected an object for ") + what + " but received " + describe_value(v));
  return v.As<Napi::Object>();
}
double prop_number(Napi::Env env, const Napi::Object& o, const char* key, const char* what, double dflt, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() && !required) return dflt;
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue()))
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected a finite number for ") + what + "." + key + " but received " +
                                             describe_value(v));
  return v.As<Napi::Number>().DoubleValue();
}
bool prop_bool(Napi::Env env, const Napi::Object& o, const char* key, const char* what, bool dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return dflt;
  if (!v.IsBoolean())
    throw_error(env, "INVALID_ARGUMENT", std::string("Expected a boolean for ") + what + "." + key + " but received " +
                                             describe_value(v));
  return v.As<Napi::Boolean>().Value();
}
// A tag for guards: which stage of the step the recording code means (echoed in the result).
int64_t tag_arg(const Napi::CallbackInfo& info, size_t i) {
  return i < info.Length() && !info[i].IsUndefined() ? int_arg(info.Env(), info, i, "tag") : -1;
}
// An optional tensor list: null / undefined -> no list.
TensorList opt_list(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return {};
  return tensor_list(info, i, what);
}
krad::Tensor* at(const TensorList& l, size_t k) { return k < l.keep.size() ? l.keep[k].get() : nullptr; }
void need_len(Napi::Env env, const TensorList& l, size_t n, bool present, const char* what) {
  if (present && l.keep.size() != n)
    throw_error(env, "SHAPE_MISMATCH", std::string(what) + ": expected " + std::to_string(n) + " tensors but received " +
                                           std::to_string(l.keep.size()));
  if (!present && !l.keep.empty())
    throw_error(env, "INVALID_ARGUMENT", std::string(what) + " must not be given here");
}

krad::RootSpec root_spec(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  Napi::Object o = object_arg(info, i, "root spec");
  krad::RootSpec s;
  s.p = prop_number(env, o, "p", "root spec", 0, true);
  s.floor = prop_number(env, o, "floor", "root spec", 0, false);
  s.ridge = prop_number(env, o, "ridge", "root spec", 0, false);
  s.newton = prop_bool(env, o, "newton", "root spec", false);
  const double it = prop_number(env, o, "maxIterations", "root spec", 0, false);
  if (it < 0 || it > 10000 || it != std::floor(it))
    throw_error(env, "INVALID_ARGUMENT", "Expected an integer in [0, 10000] for root spec.maxIterations");
  s.max_iterations = static_cast<int>(it);
  s.tolerance = prop_number(env, o, "tolerance", "root spec", 0, false);
  if (s.tolerance < 0) throw_error(env, "INVALID_ARGUMENT", "Expected root spec.tolerance >= 0");
  s.retry_float64 = prop_bool(env, o, "retryFloat64", "root spec", true);
  return s;
}

// root(a, prev, out, spec) -> Int32Array info: roots of a's items into out, the solver
// chain of krad::root (prev's item where everything failed).
Napi::Value Root(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ImmediateOnly(env, "root");
  auto a = T(info, 0, "A"), prev = T(info, 1, "prev"), out = T(info, 2, "out");
  const krad::RootSpec spec = root_spec(info, 3);
  std::vector<int> inf;
  check(env, krad::root(*a, *prev, *out, spec, &inf));
  return to_js(env, inf);
}

// rootRefresh(a, prev, out, spec, failures: Int32Array, maxFailures, tag) -> {info, failures}
// slot numbers (recording only). The op computes the roots like root(), then the new
// consecutive-failure counts (0 where the item succeeded, failures[b] + 1 where not) into
// the `failures` slot, and aborts the job with NONFINITE_FACTOR (index = item) when one
// exceeds maxFailures. `failures` is copied now: the job never reads JS memory later.
Napi::Value RootRefresh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Recording(env)) throw_error(env, "INTERNAL", "rootRefresh is recorded into jobs only");
  auto a = T(info, 0, "A"), prev = T(info, 1, "prev"), out = T(info, 2, "out");
  const krad::RootSpec spec = root_spec(info, 3);
  Napi::Value fv = info.Length() > 4 ? info[4] : env.Undefined();
  if (!fv.IsTypedArray() || fv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw_error(env, "INVALID_ARGUMENT", "Expected an Int32Array of failure counts but received " + describe_value(fv));
  Napi::Int32Array fa = fv.As<Napi::Int32Array>();
  if (static_cast<int64_t>(fa.ElementLength()) != a->batch())
    throw_error(env, "SHAPE_MISMATCH", "rootRefresh: expected " + std::to_string(a->batch()) + " failure counts but got " +
                                           std::to_string(fa.ElementLength()));
  std::vector<int32_t> failures(fa.Data(), fa.Data() + fa.ElementLength());
  const int64_t max_failures = int_arg(env, info, 5, "maxFailures");
  const int64_t tag = tag_arg(info, 6);
  // Optional per-item mask: items with 0 (parameters without a gradient this step) keep
  // their previous root and failure count, whatever the solver says.
  std::vector<uint8_t> active;
  Napi::Value av = info.Length() > 7 ? info[7] : env.Undefined();
  if (!av.IsNull() && !av.IsUndefined()) {
    if (!av.IsTypedArray() || av.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        static_cast<int64_t>(av.As<Napi::TypedArray>().ElementLength()) != a->batch())
      throw_error(env, "INVALID_ARGUMENT", "Expected a Uint8Array with one entry per item for the active mask");
    Napi::Uint8Array am = av.As<Napi::Uint8Array>();
    active.assign(am.Data(), am.Data() + am.ElementLength());
  }
  const int info_slot = NewSlot(env), fail_slot = NewSlot(env);
  Dispatch(env, [=](JobCtx& ctx) {
    std::vector<int> inf;
    KRAD_RETURN_IF_ERROR(krad::root(*a, *prev, *out, spec, &inf));
    const size_t item = static_cast<size_t>(out->item_numel()) * krad::dtype_size(out->dtype());
    std::vector<int32_t> next(failures);
    int64_t bad = -1;
    for (size_t b = 0; b < next.size(); ++b) {
      if (!active.empty() && !active[b]) {
        inf[b] = 0;
        if (out->data() != prev->data())
          KRAD_RETURN_IF_ERROR(out->backend()->copy(static_cast<char*>(out->data()) + b * item,
                                                    static_cast<const char*>(prev->data()) + b * item, item));
        continue;
      }
      next[b] = inf[b] == 0 ? 0 : next[b] + 1;
      if (next[b] > max_failures && bad < 0) bad = static_cast<int64_t>(b);
    }
    ctx.slots[info_slot].assign(inf.begin(), inf.end());
    ctx.slots[fail_slot] = next;
    if (bad >= 0) ctx.Abort("NONFINITE_FACTOR", bad, tag);
    return krad::Status::Ok();
  });
  Napi::Object o = Napi::Object::New(env);
  o.Set("info", info_slot);
  o.Set("failures", fail_slot);
  return o;
}

// guardFinite(tensors, tag): aborts the job with NONFINITE (index = the first tensor with a
// NaN or Inf) when any is not finite (recording only).
Napi::Value GuardFinite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Recording(env)) throw_error(env, "INTERNAL", "guardFinite is recorded into jobs only");
  auto xs = tensor_list(info, 0, "tensors");
  const int64_t tag = tag_arg(info, 1);
  Dispatch(env, [=](JobCtx& ctx) {
    std::vector<uint8_t> f;
    KRAD_RETURN_IF_ERROR(krad::all_finite_many(xs.in(), &f));
    for (size_t j = 0; j < f.size(); ++j)
      if (!f[j]) {
        ctx.Abort("NONFINITE", static_cast<int64_t>(j), tag);
        break;
      }
    return krad::Status::Ok();
  });
  return env.Undefined();
}

// A fused stage returns per-entry finiteness: immediately, as a Uint8Array; in a job, as a
// guard (NONFINITE, index = the first entry with a non-finite result).
template <typename Fn>
Napi::Value finite_stage(Napi::Env env, int64_t tag, Fn fn) {
  if (Recording(env)) {
    Dispatch(env, [=](JobCtx& ctx) {
      std::vector<uint8_t> f;
      KRAD_RETURN_IF_ERROR(fn(&f));
      for (size_t j = 0; j < f.size(); ++j)
        if (!f[j]) {
          ctx.Abort("NONFINITE", static_cast<int64_t>(j), tag);
          break;
        }
      return krad::Status::Ok();
    });
    return env.Undefined();
  }
  std::vector<uint8_t> f;
  check(env, fn(&f));
  Napi::Uint8Array a = Napi::Uint8Array::New(env, f.size());
  for (size_t i = 0; i < f.size(); ++i) a[i] = f[i];
  return a;
}

// updateMany(ds, ms|null, ws, us|null, mOuts|null, wOuts, {lr, momentum, weightDecay,
// nesterov, l2, decoupled}, tag): krad::Backend::update_many.
Napi::Value UpdateMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ds = tensor_list(info, 0, "ds");
  auto ms = opt_list(info, 1, "ms");
  auto ws = tensor_list(info, 2, "ws");
  auto us = opt_list(info, 3, "us");
  auto mo = opt_list(info, 4, "mOuts");
  auto wo = tensor_list(info, 5, "wOuts");
  Napi::Object o = object_arg(info, 6, "update parameters");
  krad::Backend::UpdateParams p;
  p.lr = prop_number(env, o, "lr", "update", 0, true);
  p.mu = prop_number(env, o, "momentum", "update", 0, false);
  p.wd = prop_number(env, o, "weightDecay", "update", 0, false);
  p.nesterov = prop_bool(env, o, "nesterov", "update", false);
  p.l2 = prop_bool(env, o, "l2", "update", false);
  p.decoupled = prop_bool(env, o, "decoupled", "update", false);
  p.ext = !us.keep.empty();
  const size_t n = ds.keep.size();
  need_len(env, ms, n, p.mu > 0, "ms");
  need_len(env, mo, n, p.mu > 0, "mOuts");
  need_len(env, ws, n, true, "ws");
  need_len(env, wo, n, true, "wOuts");
  if (p.ext) need_len(env, us, n, true, "us");
  const int64_t tag = tag_arg(info, 7);
  return finite_stage(env, tag, [=](std::vector<uint8_t>* f) {
    std::vector<krad::UpdateEntry> es;
    for (size_t k = 0; k < n; ++k) es.push_back({at(ds, k), at(ms, k), at(ws, k), at(us, k), at(mo, k), at(wo, k)});
    return krad::update_many(es, p, f);
  });
}

// adamMany(gs, ms, vs, ws, mOuts, vOuts, wOuts, {lr, beta1, beta2, eps, weightDecay, bc1,
// bc2, l2, decoupled}, tag): krad::Backend::adam_many.
Napi::Value AdamMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TensorList l[7];
  const char* names[7] = {"gs", "ms", "vs", "ws", "mOuts", "vOuts", "wOuts"};
  for (int k = 0; k < 7; ++k) l[k] = tensor_list(info, k, names[k]);
  for (int k = 1; k < 7; ++k) need_len(env, l[k], l[0].keep.size(), true, names[k]);
  Napi::Object o = object_arg(info, 7, "Adam parameters");
  krad::Backend::AdamParams p;
  p.lr = prop_number(env, o, "lr", "adam", 0, true);
  p.b1 = prop_number(env, o, "beta1", "adam", 0, true);
  p.b2 = prop_number(env, o, "beta2", "adam", 0, true);
  p.eps = prop_number(env, o, "eps", "adam", 0, true);
  p.wd = prop_number(env, o, "weightDecay", "adam", 0, false);
  p.bc1 = prop_number(env, o, "bc1", "adam", 1, true);
  p.bc2 = prop_number(env, o, "bc2", "adam", 1, true);
  p.l2 = prop_bool(env, o, "l2", "adam", false);
  p.decoupled = prop_bool(env, o, "decoupled", "adam", false);
  if (p.bc1 <= 0 || p.bc2 <= 0) throw_error(env, "INVALID_ARGUMENT", "adam: bias corrections must be > 0");
  const int64_t tag = tag_arg(info, 8);
  std::vector<TensorList> lists(l, l + 7);
  return finite_stage(env, tag, [=](std::vector<uint8_t>* f) {
    std::vector<krad::AdamEntry> es;
    for (size_t k = 0; k < lists[0].keep.size(); ++k)
      es.push_back({at(lists[0], k), at(lists[1], k), at(lists[2], k), at(lists[3], k), at(lists[4], k), at(lists[5], k),
                    at(lists[6], k)});
    return krad::adam_many(es, p, f);
  });
}

// graftMany(kind 'adagrad'|'adam', gs, accs, moms|null, accOuts, momOuts|null, dirs, {eps,
// beta1, beta2, bc1, bc2}): krad::Backend::graft_many.
Napi::Value GraftMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value k = info.Length() > 0 ? info[0] : env.Undefined();
  const std::string kind = k.IsString() ? k.As<Napi::String>().Utf8Value() : "";
  if (kind != "adagrad" && kind != "adam")
    throw_error(env, "INVALID_ARGUMENT", "Expected 'adagrad' or 'adam' for the graft kind but received " + describe_value(k));
  const bool adam = kind == "adam";
  auto gs = tensor_list(info, 1, "gs"), accs = tensor_list(info, 2, "accs");
  auto moms = opt_list(info, 3, "moms");
  auto ao = tensor_list(info, 4, "accOuts");
  auto mo = opt_list(info, 5, "momOuts");
  auto dirs = tensor_list(info, 6, "dirs");
  const size_t n = gs.keep.size();
  need_len(env, accs, n, true, "accs");
  need_len(env, ao, n, true, "accOuts");
  need_len(env, dirs, n, true, "dirs");
  need_len(env, moms, n, adam, "moms");
  need_len(env, mo, n, adam, "momOuts");
  Napi::Object o = object_arg(info, 7, "graft parameters");
  krad::Backend::GraftParams p;
  p.eps = prop_number(env, o, "eps", "graft", 0, true);
  p.b1 = prop_number(env, o, "beta1", "graft", 0, adam);
  p.b2 = prop_number(env, o, "beta2", "graft", 0, adam);
  p.bc1 = prop_number(env, o, "bc1", "graft", 1, adam);
  p.bc2 = prop_number(env, o, "bc2", "graft", 1, adam);
  if (p.bc1 <= 0 || p.bc2 <= 0) throw_error(env, "INVALID_ARGUMENT", "graft: bias corrections must be > 0");
  const auto gk = adam ? krad::Backend::Graft::ADAM : krad::Backend::Graft::ADAGRAD;
  Dispatch(env, [=](JobCtx&) {
    std::vector<krad::GraftEntry> es;
    for (size_t j = 0; j < n; ++j) es.push_back({at(gs, j), at(accs, j), at(moms, j), at(ao, j), at(mo, j), at(dirs, j)});
    return krad::graft_many(gk, es, p);
  });
  return env.Undefined();
}

// axpbyOutMany(xs, ys, zs, a, b): zs[i] = a xs[i] + b ys[i]
Napi::Value AxpbyOutMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto xs = tensor_list(info, 0, "xs"), ys = tensor_list(info, 1, "ys"), zs = tensor_list(info, 2, "zs");
  const double a = number_arg(env, info, 3, "a"), b = number_arg(env, info, 4, "b");
  Dispatch(env, [=](JobCtx&) { return krad::axpby_out_many(xs.in(), ys.in(), zs.out(), a, b); });
  return env.Undefined();
}

// crc32c(bytes, seed = 0) -> number; crc32cAsync -> Promise of it (off the main thread, for
// large checkpoints). `bytes`: any typed array or Buffer (its bytes), ArrayBuffer-backed or
// shared. The async form copies nothing: the caller must not change the bytes meanwhile.
Napi::Value Crc32cImpl(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  Napi::Value v = info.Length() > 0 ? info[0] : env.Undefined();
  if (!v.IsTypedArray())
    throw_error(env, "INVALID_ARGUMENT", "Expected a Buffer or typed array for crc32c but received " + describe_value(v));
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, a, &type, &length, &data, &ab, &off) != napi_ok)
    throw_error(env, "INVALID_ARGUMENT", "crc32c: could not read the typed array");
  const size_t bytes = a.ByteLength();
  const double seed = number_or(env, info, 1, "seed", 0.0);
  if (seed < 0 || seed > 4294967295.0 || seed != std::floor(seed))
    throw_error(env, "INVALID_ARGUMENT", "crc32c: the seed must be an unsigned 32-bit integer");
  const uint32_t s = static_cast<uint32_t>(seed);
  if (!async) return Napi::Number::New(env, krad::crc32c(data, data ? bytes : 0, s));
  // Keep the array alive until the work is done.
  auto ref = std::make_shared<Napi::Reference<Napi::Value>>(Napi::Persistent(v));
  auto out = std::make_shared<uint32_t>(0);
  return QueueWork(
      env, "kradagrad.crc32c", [=]() { *out = krad::crc32c(data, data ? bytes : 0, s); },
      [ref, out](Napi::Env e) -> Napi::Value {
        ref->Reset();
        return Napi::Number::New(e, *out);
      });
}
Napi::Value Crc32c(const Napi::CallbackInfo& info) { return Crc32cImpl(info, false); }
Napi::Value Crc32cAsync(const Napi::CallbackInfo& info) { return Crc32cImpl(info, true); }

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  ImmediateOnly(info.Env(), "synchronize");
  check(info.Env(), backend_arg(info, 0)->synchronize());
  return info.Env().Undefined();
}

Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction())
    throw_error(info.Env(), "INVALID_ARGUMENT", "setErrorClass expects a constructor");
  set_error_class(info.Env(), info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

}  // namespace

void InitOps(Napi::Env env, Napi::Object exports) {
  struct Entry {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Entry entries[] = {
      {"backends", Backends},     {"tensor", NewTensor},       {"fromArray", FromArray},
      {"gemm", Gemm},             {"gram", Gram},              {"modeProduct", ModeProduct},
      {"eigh", Eigh},             {"eighAsync", EighAsync},    {"matpow", Matpow},
      {"matpowAsync", MatpowAsync}, {"axpby", Axpby},          {"scale", Scale},
      {"addIdentity", AddIdentity}, {"symmetrize", Symmetrize}, {"copy", Copy},
      {"fill", Fill},             {"mulAcc", MulAcc},          {"divSqrt", DivSqrt},
      {"dot", Dot},               {"frobNorm", FrobNorm},      {"trace", Trace},
      {"allFinite", AllFinite},   {"boxes", Boxes},            {"synchronize", Synchronize},
      {"scaleByNormRatio", ScaleByNormRatio}, {"inverseUpdate", InverseUpdate}, {"allFiniteMany", AllFiniteMany},
      {"setErrorClass", SetErrorClass},
      {"axpbyMany", AxpbyMany},   {"copyMany", CopyMany},      {"mulAccMany", MulAccMany},
      {"divSqrtMany", DivSqrtMany}, {"scaleByNormRatioMany", ScaleByNormRatioMany}, {"boxesMany", BoxesMany},
      {"root", Root},             {"rootRefresh", RootRefresh}, {"guardFinite", GuardFinite},
      {"updateMany", UpdateMany}, {"adamMany", AdamMany},      {"graftMany", GraftMany},
      {"axpbyOutMany", AxpbyOutMany}, {"crc32c", Crc32c},      {"crc32cAsync", Crc32cAsync},
  };
  for (const auto& e : entries) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
}

}  // namespace krad_napi
