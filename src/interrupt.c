#include <R.h>
#include <Rinternals.h>
#include <R_ext/Utils.h>

/* Check for a pending user interrupt without longjmp-ing through Rust frames:
 * R_CheckUserInterrupt() longjmps on interrupt, and R_ToplevelExec() confines
 * that jump to a fresh top-level context, which then returns FALSE.
 * Only ever called from the R main thread. */
static void scribeR_chk_int(void *dummy) {
    (void) dummy;
    R_CheckUserInterrupt();
}

int scribeR_interrupt_pending(void) {
    return R_ToplevelExec(scribeR_chk_int, NULL) == FALSE;
}
