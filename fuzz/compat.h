/*
 * compat.h — force-included (-include) into every file of the fuzz build only.
 * clang 14 rejects some feature names in __builtin_cpu_supports ("f16c") that
 * gcc accepts; the fuzz build takes the portable scalar paths instead, which is
 * what a parser fuzz run wants anyway (the kernels have their own tests).
 */
#if defined(__clang__)
static inline int gn_fuzz_cpu_supports_(const char *feature) { (void)feature; return 0; }
#define __builtin_cpu_supports(x) gn_fuzz_cpu_supports_(x)
#endif
