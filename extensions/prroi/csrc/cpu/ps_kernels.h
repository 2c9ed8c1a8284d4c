#pragma once
// PS-PrRoI pooling on the CPU: the forward (ps_forward_kernel), the feature gradient
// (ps_backward_input_kernel) and the box gradient (ps_backward_rois_kernel). Every bin reads its own input
// channel, so the forward and the box gradient multiply the taps out per bin, or per bin edge (PlaneTaps),
// and apply them to every channel; the feature gradient takes the input channels in turn (AllRoiTaps).
//
// Part of cpu/prroi_pool_kernels.h, which includes it inside its namespaces, after cpu/taps.h.

#ifndef SODLIB_CPU_KERNEL_PARTS
#error "cpu/ps_kernels.h is part of cpu/prroi_pool_kernels.h: include that file instead"
#endif

// PS-PrRoI forward: output[k, c, ph, pw] = sum over the bin's pixels of A_y(i) A_x(j) w[c'][i][j] / bin area,
// c' = (c * kh + ph) * kw + pw. Every bin reads its own channels, so the work is per bin and channel.
template <typename scalar_t, typename acc_t>
void ps_forward_kernel(const scalar_t* input, const acc_t* rois, acc_t scale, const Shapes& s, scalar_t* output) {
  at::parallel_for(0, s.rois, grain(s.out_channels * s.bins()), [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> columns, rows;
    PlaneTaps<acc_t> bin;
    for (int64_t k = begin; k < end; ++k) {
      scalar_t* out = output + k * s.out_channels * s.bins();
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) {
        std::fill(out, out + s.out_channels * s.bins(), scalar_t(0));
        continue;
      }
      fill_bin_taps(g, s, columns, rows);
      const acc_t inv_area = acc_t(1) / (g.bin_w * g.bin_h);
      for (int64_t ph = 0; ph < s.pooled_height; ++ph)
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          bin.fill(rows[ph], columns[pw], s.width, inv_area);
          for (int64_t c = 0; c < s.out_channels; ++c)
            out[(c * s.pooled_height + ph) * s.pooled_width + pw] =
                static_cast<scalar_t>(bin.dot(input + s.plane_offset(g.batch, c, ph, pw)));
        }
    }
  });
}

// grad_input[n, c', i, j] = sum over the RoIs k of image n of grad_output[k, c, ph, pw] * A_y(ph; i) * A_x(pw; j)
// / bin area, where c' = (c * kh + ph) * kw + pw. Each RoI has exactly one bin in each input channel c', so
// the kernel takes the channels in turn and adds every RoI's bin to the channel's plane, which stays in
// cache meanwhile (RoI by RoI, each RoI would touch all C' planes, far more than a cache holds). Threads
// split the input channels; each plane is zeroed right before its sums (grad_input may start uninitialised).
template <typename scalar_t, typename acc_t>
void ps_backward_input_kernel(const scalar_t* grad_output, const acc_t* rois, acc_t scale, const Shapes& s,
                              acc_t* grad_input) {
  const AllRoiTaps<acc_t> taps(rois, scale, s);
  const int64_t bins = s.bins(), plane_size = s.height * s.width;
  at::parallel_for(0, s.in_channels, grain(s.rois), [&](int64_t begin, int64_t end) {
    for (int64_t channel = begin; channel < end; ++channel) {
      const int64_t c = channel / bins, bin = channel % bins, ph = bin / s.pooled_width, pw = bin % s.pooled_width;
      for (int64_t n = 0; n < s.batch; ++n) {
        acc_t* plane = grad_input + (n * s.in_channels + channel) * plane_size;
        std::fill(plane, plane + plane_size, acc_t(0));
      }
      for (int64_t k = 0; k < s.rois; ++k) {
        const acc_t grad = static_cast<acc_t>(grad_output[(k * s.out_channels + c) * bins + bin]);
        if (taps.batch[k] < 0 || grad == acc_t(0)) continue;
        acc_t* plane = grad_input + (taps.batch[k] * s.in_channels + channel) * plane_size;
        const Taps<acc_t> rows = taps.rows(ph, k), columns = taps.columns(pw, k);
        for (int64_t i = 0; i < rows.count; ++i) {
          const acc_t weight = grad * rows.weight[i];
          acc_t* row = plane + (rows.first + i) * s.width + columns.first;
          for (int64_t j = 0; j < columns.count; ++j) row[j] += weight * columns.weight[j];
        }
      }
    }
  });
}

// grad_rois[k] = (0, d/dx1, d/dy1, d/dx2, d/dy2) of sum(grad_output * output), one RoI per task:
// each RoI's four sums are accumulated locally and written once.
template <typename scalar_t, typename acc_t>
void ps_backward_rois_kernel(const scalar_t* grad_output, const scalar_t* input, const acc_t* rois,
                          const scalar_t* output, acc_t scale, const Shapes& s, acc_t* grad_rois) {
  at::parallel_for(0, s.rois, grain(s.out_channels * s.bins()), [&](int64_t begin, int64_t end) {
    AxisTaps<acc_t> columns, rows, column_edges, row_edges;
    PlaneTaps<acc_t> left, right, top, bottom;
    for (int64_t k = begin; k < end; ++k) {
      acc_t* grad_roi = grad_rois + 5 * k;
      std::fill(grad_roi, grad_roi + 5, acc_t(0));
      const auto g = roi_geometry(rois + 5 * k, scale, s.pooled_height, s.pooled_width, s.batch);
      if (!g.valid) continue;
      fill_bin_taps(g, s, columns, rows);
      column_edges.fill_edges(g.x1, g.bin_w, s.pooled_width, s.width);
      row_edges.fill_edges(g.y1, g.bin_h, s.pooled_height, s.height);
      const acc_t inv_area = acc_t(1) / (g.bin_w * g.bin_h);
      acc_t d_x1 = 0, d_y1 = 0, d_x2 = 0, d_y2 = 0;  // w.r.t. the scaled corners
      for (int64_t ph = 0; ph < s.pooled_height; ++ph)
        for (int64_t pw = 0; pw < s.pooled_width; ++pw) {
          // line integrals of f along the bin's left, right, top and bottom edges, over the bin area
          left.fill(rows[ph], column_edges[pw], s.width, inv_area);
          right.fill(rows[ph], column_edges[pw + 1], s.width, inv_area);
          top.fill(row_edges[ph], columns[pw], s.width, inv_area);
          bottom.fill(row_edges[ph + 1], columns[pw], s.width, inv_area);
          // bin edges move with the RoI corners: left = x1 + pw / kw * (x2 - x1), right likewise with pw + 1
          const acc_t fl = static_cast<acc_t>(pw) / s.pooled_width;
          const acc_t fr = static_cast<acc_t>(pw + 1) / s.pooled_width;
          const acc_t ft = static_cast<acc_t>(ph) / s.pooled_height;
          const acc_t fb = static_cast<acc_t>(ph + 1) / s.pooled_height;
          for (int64_t c = 0; c < s.out_channels; ++c) {
            const int64_t o = ((k * s.out_channels + c) * s.pooled_height + ph) * s.pooled_width + pw;
            const acc_t grad = static_cast<acc_t>(grad_output[o]);
            if (grad == acc_t(0)) continue;
            const acc_t out = static_cast<acc_t>(output[o]);
            const scalar_t* plane = input + s.plane_offset(g.batch, c, ph, pw);
            // derivative of the bin mean with respect to each of its edges (Zhang et al. 2021, eq. 7)
            const acc_t d_left = out / g.bin_w - left.dot(plane);
            const acc_t d_right = right.dot(plane) - out / g.bin_w;
            const acc_t d_top = out / g.bin_h - top.dot(plane);
            const acc_t d_bottom = bottom.dot(plane) - out / g.bin_h;
            d_x1 += grad * (d_left * (1 - fl) + d_right * (1 - fr));
            d_x2 += grad * (d_left * fl + d_right * fr);
            d_y1 += grad * (d_top * (1 - ft) + d_bottom * (1 - fb));
            d_y2 += grad * (d_top * ft + d_bottom * fb);
          }
        }
      grad_roi[1] = d_x1 * scale;
      grad_roi[2] = d_y1 * scale;
      grad_roi[3] = d_x2 * scale;
      grad_roi[4] = d_y2 * scale;
    }
  });
}
