// SPDX-License-Identifier: Apache-2.0
//
// cpm.v1 Ocr messages <-> the engine's request and result (core/runtime/ocr_request.h).
#pragma once

#include "absl/status/statusor.h"
#include "cpm/v1/ocr.pb.h"

namespace cpm::core::runtime {
struct OcrRequest;
struct OcrResult;
struct TextDelta;
}  // namespace cpm::core::runtime

namespace cpm::server {

// The request's image, adapter, prompt, slices and decoding options; the caller adds deadline,
// cancellation and streaming. INVALID_ARGUMENT for what the API allows but the engine does not
// do (min_new_tokens > 0) and for an unknown strategy; value ranges are the engine's to check.
absl::StatusOr<core::runtime::OcrRequest> to_ocr_request(const cpm::v1::RecognizeRequest& request);

void to_proto(const core::runtime::OcrResult& result, cpm::v1::RecognizeResponse* out);
void to_proto(const core::runtime::TextDelta& delta, cpm::v1::TextDelta* out);

}  // namespace cpm::server
