#include <R.h>
#include <Rinternals.h>
#include <R_ext/Utils.h>
#include <string.h>

/* Asks R whether the computation must stop, without letting a longjmp cross
 * a Rust frame: R_CheckUserInterrupt() runs under R_tryCatch, which catches
 * an interrupt condition (status 1) or an error such as setTimeLimit()'s
 * (status 2, message kept), and R_ToplevelExec confines anything else to a
 * fresh top-level context (then treated as an interrupt).
 * Only ever called from the R main thread. */
static int status = 0;
static char message[1024];

static SEXP check_body(void *data) {
    (void) data;
    R_CheckUserInterrupt();
    return R_NilValue;
}

static SEXP check_handler(SEXP cond, void *data) {
    (void) data;
    if (inherits(cond, "interrupt")) {
        status = 1;
        return R_NilValue;
    }
    status = 2;
    message[0] = '\0';
    if (TYPEOF(cond) == VECSXP && XLENGTH(cond) > 0) {
        SEXP m = VECTOR_ELT(cond, 0);
        if (TYPEOF(m) == STRSXP && XLENGTH(m) > 0) {
            strncpy(message, CHAR(STRING_ELT(m, 0)), sizeof(message) - 1);
            message[sizeof(message) - 1] = '\0';
        }
    }
    return R_NilValue;
}

static void check(void *data) {
    (void) data;
    SEXP conds = PROTECT(allocVector(STRSXP, 2));
    SET_STRING_ELT(conds, 0, mkChar("interrupt"));
    SET_STRING_ELT(conds, 1, mkChar("error"));
    R_tryCatch(check_body, NULL, conds, check_handler, NULL, NULL, NULL);
    UNPROTECT(1);
}

int scribeR_interrupt_pending(void) {
    status = 0;
    if (!R_ToplevelExec(check, NULL) && status == 0) status = 1;
    return status;
}

const char *scribeR_interrupt_message(void) {
    return message;
}
