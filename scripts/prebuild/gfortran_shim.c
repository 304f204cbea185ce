/*
 * The one libgfortran routine that the LAPACK part of Debian's static OpenBLAS pulls into
 * kradagrad_cpu.node: ?ORMTR / ?ORMQR / ?ORMQL, reached from ?SYEVD, build ILAENV's option
 * string with `SIDE // TRANS`.
 * Linking it here keeps the prebuilt addon free of libgfortran.so.5, which minimal systems
 * lack, without needing libgfortran.a (gfortran) on the build machine. scripts/prebuild.js
 * checks after linking that no other _gfortran_* symbol is left undefined; if a future
 * LAPACK routine needs more, it links libgfortran.a instead when that is installed.
 *
 * Semantics (libgfortran/intrinsics/string_intrinsics_inc.c, gfortran >= 8, where string
 * lengths are size_t): dest(1:destlen) = s1 // s2, truncated or blank-padded.
 */
#include <stddef.h>
#include <string.h>

__attribute__((visibility("hidden"))) void _gfortran_concat_string(size_t destlen, char *dest, size_t len1, const char *s1,
                                                                   size_t len2, const char *s2) {
  if (len1 >= destlen) {
    memcpy(dest, s1, destlen);
    return;
  }
  memcpy(dest, s1, len1);
  dest += len1;
  destlen -= len1;
  if (len2 >= destlen) {
    memcpy(dest, s2, destlen);
    return;
  }
  memcpy(dest, s2, len2);
  memset(dest + len2, ' ', destlen - len2);
}
