{
  "targets": [
    {
      "target_name": "kradagrad_cpu",
      "sources": [
        "native/core/backend.cc",
        "native/core/crc32c.cc",
        "native/core/ops.cc",
        "native/core/roots.cc",
        "native/cpu/bandwidth.cc",
        "native/cpu/cpu_backend.cc",
        "native/cpu/kernels.cc",
        "native/cpu/kernels_avx2.cc",
        "native/cpu/kernels_avx512.cc",
        "native/cpu/kernels_generic.cc",
        "native/cpu/parallel.cc",
        "native/napi/addon.cc",
        "native/napi/args.cc",
        "native/napi/backends.cc",
        "native/napi/errors.cc",
        "native/napi/job.cc",
        "native/napi/ops_binding.cc",
        "native/napi/runtime_binding.cc",
        "native/napi/tensor_handle.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "/usr/include/x86_64-linux-gnu/openblas-pthread"
      ],
      "defines": [
        "NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "KRAD_ABI_VERSION=<!(node -p \"require('./package.json').kradagrad.abi\")"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter",
                    "-ffp-contract=off", "-fno-math-errno", "-pthread"],
      "ldflags": ["-pthread"],
      "libraries": ["-llapacke", "-lopenblas"],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" }
        }]
      ]
    }
  ]
}
