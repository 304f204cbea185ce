#include "ops_binding.h"

#include <functional>
#include <limits>
#include <memory>

#include "../core/ops.h"
#include "args.h"
#include "backends.h"
#include "errors.h"
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
  int64_t n = batch;
  for (auto d : shape) n *= d;
  if (batch < 1) throw_error(env, "INVALID_ARGUMENT", "Expected batch >= 1 but received " + std::to_string(batch));
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
  check(env, krad::gemm(*a, *b, *c, bool_or(env, info, 3, "transA", false), bool_or(env, info, 4, "transB", false),
                        number_or(env, info, 5, "alpha", 1.0), number_or(env, info, 6, "beta", 0.0)));
  return env.Undefined();
}

// gram(g, mode, h, alpha = 1, beta = 0)
Napi::Value Gram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = T(info, 0, "G");
  int mode = mode_arg(info, 1);
  auto h = T(info, 2, "H");
  check(env, krad::gram(*g, mode, *h, number_or(env, info, 3, "alpha", 1.0), number_or(env, info, 4, "beta", 0.0)));
  return env.Undefined();
}

// modeProduct(g, mode, m, out, transM = false)
Napi::Value ModeProduct(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto g = T(info, 0, "G");
  int mode = mode_arg(info, 1);
  auto m = T(info, 2, "M"), out = T(info, 3, "out");
  check(env, krad::mode_product(*g, mode, *m, *out, bool_or(env, info, 4, "transM", false)));
  return env.Undefined();
}

// Runs `fn` on the libuv pool; resolves with the per-item info array. The captured
// TensorPtrs keep the buffers alive even if their handles are disposed meanwhile.
class InfoWorker : public Napi::AsyncWorker {
 public:
  InfoWorker(Napi::Env env, std::function<krad::Status(std::vector<int>*)> fn)
      : Napi::AsyncWorker(env, "kradagrad.linalg"), fn_(std::move(fn)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override { status_ = fn_(&info_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_.ok()) {
      deferred_.Resolve(to_js(env, info_));
      return;
    }
    Napi::Error e = make_error(env, krad::code_name(status_.code), status_.message);
    deferred_.Reject(e.Value());
  }

 private:
  std::function<krad::Status(std::vector<int>*)> fn_;
  Napi::Promise::Deferred deferred_;
  krad::Status status_;
  std::vector<int> info_;
};

template <typename Fn>
Napi::Value run_info(const Napi::CallbackInfo& info, bool async, Fn fn) {
  Napi::Env env = info.Env();
  if (!async) {
    std::vector<int> out;
    check(env, fn(&out));
    return to_js(env, out);
  }
  auto* w = new InfoWorker(env, fn);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// eigh(a, w, v) -> Int32Array info (0 = ok per item); eighAsync -> Promise of the same
Napi::Value EighImpl(const Napi::CallbackInfo& info, bool async) {
  auto a = T(info, 0, "A"), w = T(info, 1, "W"), v = T(info, 2, "V");
  return run_info(info, async, [a, w, v](std::vector<int>* out) { return krad::eigh(*a, *w, *v, out); });
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
  return run_info(info, async, [=](std::vector<int>* inf) { return krad::matpow(*a, p, floor, ridge, *out, inf); });
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
  check(env, krad::axpby(*x, *y, as, a, bs, b));
  return env.Undefined();
}

// scale(x, alpha)
Napi::Value Scale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x");
  double a;
  std::vector<double> as;
  coeff_arg(env, info, 1, "alpha", 1.0, &a, &as);
  check(env, krad::scale(*x, as, a));
  return env.Undefined();
}

// addIdentity(a, alpha)
Napi::Value AddIdentity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "A");
  double a;
  std::vector<double> as;
  coeff_arg(env, info, 1, "alpha", 1.0, &a, &as);
  check(env, krad::add_identity(*x, as, a));
  return env.Undefined();
}

Napi::Value Symmetrize(const Napi::CallbackInfo& info) {
  check(info.Env(), krad::symmetrize(*T(info, 0, "A")));
  return info.Env().Undefined();
}

// copy(src, dst): same element count, casts between dtypes
Napi::Value Copy(const Napi::CallbackInfo& info) {
  auto s = T(info, 0, "src"), d = T(info, 1, "dst");
  check(info.Env(), krad::copy(*s, *d));
  return info.Env().Undefined();
}

Napi::Value Fill(const Napi::CallbackInfo& info) {
  auto x = T(info, 0, "x");
  check(info.Env(), krad::fill(*x, number_arg(info.Env(), info, 1, "value")));
  return info.Env().Undefined();
}

// mulAcc(x, y, acc, a, b): acc = a acc + b x y
Napi::Value MulAcc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x"), y = T(info, 1, "y"), acc = T(info, 2, "acc");
  check(env, krad::mul_acc(*x, *y, *acc, number_arg(env, info, 3, "a"), number_arg(env, info, 4, "b")));
  return env.Undefined();
}

// divSqrt(x, acc, out, scale, eps): out = x / (sqrt(acc scale) + eps)
Napi::Value DivSqrt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto x = T(info, 0, "x"), acc = T(info, 1, "acc"), out = T(info, 2, "out");
  check(env, krad::div_sqrt(*x, *acc, *out, number_arg(env, info, 3, "scale"), number_arg(env, info, 4, "eps")));
  return env.Undefined();
}

Napi::Value Dot(const Napi::CallbackInfo& info) {
  std::vector<double> out;
  check(info.Env(), krad::dot(*T(info, 0, "x"), *T(info, 1, "y"), &out));
  return to_js(info.Env(), out);
}
Napi::Value FrobNorm(const Napi::CallbackInfo& info) {
  std::vector<double> out;
  check(info.Env(), krad::frob_norm(*T(info, 0, "x"), &out));
  return to_js(info.Env(), out);
}
Napi::Value Trace(const Napi::CallbackInfo& info) {
  std::vector<double> out;
  check(info.Env(), krad::trace(*T(info, 0, "A"), &out));
  return to_js(info.Env(), out);
}
Napi::Value AllFinite(const Napi::CallbackInfo& info) {
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
  check(env, krad::boxes(*full, *blocks, offsets, bool_or(env, info, 3, "scatter", false), first));
  return env.Undefined();
}

// scaleByNormRatio(d, a, eps): d_b *= ||a_b|| / (||d_b|| + eps)
Napi::Value ScaleByNormRatio(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto d = T(info, 0, "d"), a = T(info, 1, "a");
  check(env, krad::scale_by_norm_ratio(*d, *a, number_arg(env, info, 2, "eps")));
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
  check(env, krad::inverse_update(*l, *t, *m,
                                  kind == "trace" ? krad::Backend::Normalizer::TRACE : krad::Backend::Normalizer::FROBENIUS));
  return env.Undefined();
}

// allFiniteMany([tensors]) -> Uint8Array, one entry per tensor
Napi::Value AllFiniteMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
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
  check(env, krad::axpby_many(xs.in(), ys.out(), number_arg(env, info, 2, "alpha"), number_arg(env, info, 3, "beta")));
  return env.Undefined();
}
// copyMany(srcs, dsts)
Napi::Value CopyMany(const Napi::CallbackInfo& info) {
  auto s = tensor_list(info, 0, "srcs"), d = tensor_list(info, 1, "dsts");
  check(info.Env(), krad::copy_many(s.in(), d.out()));
  return info.Env().Undefined();
}
// mulAccMany(xs, ys, accs, a, b): accs[i] = a accs[i] + b xs[i] ys[i]
Napi::Value MulAccMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto xs = tensor_list(info, 0, "xs"), ys = tensor_list(info, 1, "ys"), accs = tensor_list(info, 2, "accs");
  check(env, krad::mul_acc_many(xs.in(), ys.in(), accs.out(), number_arg(env, info, 3, "a"), number_arg(env, info, 4, "b")));
  return env.Undefined();
}
// divSqrtMany(xs, accs, outs, scale, eps): outs[i] = xs[i] / (sqrt(accs[i] scale) + eps)
Napi::Value DivSqrtMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto xs = tensor_list(info, 0, "xs"), accs = tensor_list(info, 1, "accs"), outs = tensor_list(info, 2, "outs");
  check(env, krad::div_sqrt_many(xs.in(), accs.in(), outs.out(), number_arg(env, info, 3, "scale"),
                                 number_arg(env, info, 4, "eps")));
  return env.Undefined();
}
// scaleByNormRatioMany(ds, as, eps)
Napi::Value ScaleByNormRatioMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto ds = tensor_list(info, 0, "ds"), as = tensor_list(info, 1, "as");
  check(env, krad::scale_by_norm_ratio_many(ds.out(), as.in(), number_arg(env, info, 2, "eps")));
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
  check(env, krad::boxes_many(fulls.out(), *blocks, offsets, firsts, bool_or(env, info, 4, "scatter", false)));
  return env.Undefined();
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
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
  };
  for (const auto& e : entries) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
}

}  // namespace krad_napi
