#' Plot the loss curve of a fit
#'
#' @param fit A [ScribeSVIResults-class] object.
#' @param smooth Width of the running-mean window drawn over the raw loss
#'   (`0` for none).
#' @param log_steps Put the step axis on a log scale.
#' @return A `ggplot` object (print it to draw).
#' @examples
#' if (requireNamespace("ggplot2", quietly = TRUE)) {
#'   counts <- scribe_example_data()
#'   fit <- scribe_fit(counts, model = "nbdm", n_steps = 200, seed = 1, verbose = FALSE,
#'                     optimizer_config = list(name = "adam", step_size = 0.01))
#'   plot_loss(fit)
#' }
#' @export
plot_loss <- function(fit, smooth = 50L, log_steps = TRUE) {
  if (!is(fit, "ScribeSVIResults")) abort_input("{.arg fit} must be a ScribeSVIResults object.")
  if (!requireNamespace("ggplot2", quietly = TRUE)) abort_input("{.fn plot_loss} needs the {.pkg ggplot2} package.")
  check_number(smooth, "smooth", "a whole number >= 0", function(v) v >= 0 && v == round(v))
  loss <- loss_history(fit)
  df <- data.frame(step = seq_along(loss), loss = loss)
  p <- ggplot2::ggplot(df, ggplot2::aes(x = .data$step, y = .data$loss)) +
    ggplot2::geom_line(colour = "grey70", na.rm = TRUE) +
    ggplot2::labs(x = "step", y = "loss (negative ELBO)",
                  title = sprintf("%s (%s): SVI loss", fit@model$model, fit@model$parameterization))
  if (smooth > 1 && length(loss) > smooth) {
    sm <- stats::filter(ifelse(is.finite(loss), loss, NA), rep(1 / smooth, smooth), sides = 1)
    df$smooth <- as.numeric(sm)
    p <- p + ggplot2::geom_line(data = df, ggplot2::aes(y = .data$smooth), colour = "steelblue4", na.rm = TRUE)
  }
  if (log_steps) p <- p + ggplot2::scale_x_log10()
  p + ggplot2::theme_minimal()
}
