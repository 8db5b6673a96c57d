// Linked into the strata binary of the sanitizer build only (STRATA_SANITIZE):
// what LeakSanitizer needs to check strata under mpirun.
//
// Open MPI (with hwloc, libevent and PMIx underneath) keeps allocations from
// MPI_Init until exit on purpose, and unloads its plugin components (mca_*.so)
// in MPI_Finalize, so their leak reports cannot even name a module. Two hooks:
//   - dlclose does nothing here, so every component stays mapped and each
//     report carries the library it came from;
//   - the suppressions below ignore a leak only when its allocation stack runs
//     through one of those libraries. A leak of strata's own has no such frame
//     and still fails the run.
// These libraries have no frame pointers, so the fast unwinder loses the
// callers of their asprintf strings: vasprintf is suppressed as well (strata
// itself never calls asprintf).
//
// And one default option: GCC 12's runtime intercepts __tls_get_addr and takes
// a dynamic TLS block (Open MPI's plugins have some) for a pre-2.25 glibc one
// when its address happens to sit at a certain offset in its page; the leak
// check at exit then crashes ("Tracer caught signal 11", about one 4-rank job
// in five here). intercept_tls_get_addr=0 turns that interception off.

extern "C" {

int dlclose(void*) { return 0; }

const char* __asan_default_options() { return "intercept_tls_get_addr=0"; }

const char* __lsan_default_suppressions() {
  return "leak:libmpi.so\n"
         "leak:libopen-pal.so\n"
         "leak:libopen-rte.so\n"
         "leak:libhwloc.so\n"
         "leak:libevent\n"
         "leak:libpmix.so\n"
         "leak:/openmpi3/mca_\n"
         "leak:__vasprintf_internal\n";
}

}  // extern "C"
