//! Tile sizes of the generated convolution kernels: everything the WGSL generator (`super::wgsl`) and the
//! launches (`super::launch`) share, the variants an adapter can get (`select_tiles`), and the list of all
//! of them (`selectable_tiles`, what the naga test and the digest test walk).

/// Lanes that share one operand by subgroup broadcasts (the subgroup kernels use lanes `sgid % 8`).
pub const SUBGROUP_LANES: usize = 8;
/// Invocations per workgroup of every convolution kernel.
pub const WORKGROUP: usize = 64;
/// (channel, tap) pairs staged in workgroup memory per chunk (portable kernels).
pub const STAGE: usize = 216;
/// Voxels staged per chunk by the portable weight-gradient kernels (a multiple of 8).
pub const VOXEL_CHUNK: usize = 128;
/// Taps along W the row kernels are written for (stride 1).
pub const ROW_TAPS: usize = 3;
/// Voxels per invocation of the 1x1x1 forward and input-gradient kernels: one aligned vec4 of the source
/// (so they run where an image's voxels are a multiple of 4).
pub const POINTWISE_COLS: usize = 4;
/// Output channels one workgroup of the 1x1x1 weight-gradient kernel owns (SegResNetDS's heads have 3 or 4).
pub const POINTWISE_OUT: usize = 4;
/// Input channels one workgroup of the 1x1x1 weight-gradient kernel owns (a multiple of 4).
pub const POINTWISE_IN: usize = 16;

/// Rounds of the 1x1x1 weight gradient's lane tree (each sums a share of the accumulators).
pub const POINTWISE_ROUNDS: usize = 2;
/// Vec4 sums per lane in one round of that tree (its workgroup memory holds this many per lane).
pub const POINTWISE_ROUND_SUMS: usize = POINTWISE_OUT * POINTWISE_IN / 4 / POINTWISE_ROUNDS;

/// Tile sizes of one generated kernel module: everything the generated text and its launcher share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTiles {
    /// Whether the kernels broadcast the shared operand across 8 lanes with subgroup operations (otherwise
    /// it is staged in workgroup memory).
    pub subgroup: bool,
    /// Columns (voxels, or weight entries) per invocation of the general kernels.
    pub cols: usize,
    /// Result channels per invocation (and workgroup) of the general kernels, divided by 4 (vec4 lanes).
    pub quads: usize,
    /// Consecutive results along W per invocation of the row kernels (stride 1, 3 taps along W).
    pub row_cols: usize,
    /// Result channels per workgroup of the forward and input-gradient row kernels, divided by 4.
    pub row_quads: usize,
    /// Kernel rows (ci, kd, kh) per invocation of the weight-gradient row kernel.
    pub row_kernel_rows: usize,
}

impl ConvTiles {
    /// Result channels per workgroup of the general kernels (and of the weight-gradient row kernel).
    pub fn channels(&self) -> usize {
        4 * self.quads
    }

    /// Columns per workgroup of the general kernels.
    pub fn workgroup_cols(&self) -> usize {
        WORKGROUP * self.cols
    }

    /// Result channels per workgroup of the forward and input-gradient row kernels.
    pub fn row_channels(&self) -> usize {
        4 * self.row_quads
    }

    /// A short name of the variant, unique among variants (the pipeline cache's key).
    pub fn id(&self) -> String {
        format!(
            "conv-{}-c{}x{}-r{}x{}x{}",
            if self.subgroup { "sg" } else { "wg" },
            self.cols,
            self.channels(),
            self.row_cols,
            self.row_channels(),
            self.row_kernel_rows
        )
    }

    /// Bytes of workgroup memory the largest entry point of the module uses: none in the subgroup module
    /// (its lanes share operands by shuffles); in the portable module staged weights, staged voxels (weight
    /// gradients) or the 1x1x1 weight gradient's lane sums.
    pub fn workgroup_bytes(&self) -> usize {
        if self.subgroup {
            return 0;
        }
        let weights = STAGE * self.quads * 16;
        let voxels = VOXEL_CHUNK * self.quads * 16 + VOXEL_CHUNK * 16;
        weights
            .max(voxels)
            .max(WORKGROUP * POINTWISE_ROUND_SUMS * 16)
    }

    /// The variant of these tiles for one launch with `result_channels` channels per result and `columns`
    /// columns (voxels or weight entries): half the channels per invocation where the call has at most half
    /// of them (an 8-channel layer would otherwise leave half of every accumulator idle), and half the columns
    /// where all of them fit half a workgroup (a 4x4x4 bottleneck would otherwise idle half the workgroup).
    /// Each result is still reduced in the same order, so every variant gives the same bits.
    pub fn for_call(&self, result_channels: usize, columns: usize) -> ConvTiles {
        let mut t = *self;
        if t.quads > 1 && result_channels <= 2 * t.quads {
            t.quads /= 2;
            t.row_quads = t.row_quads.min(t.quads);
        }
        if t.cols > 1 && columns <= WORKGROUP * t.cols / 2 {
            t.cols /= 2;
        }
        t
    }

    /// Whether a 1x1x1 product with `result_channels` result channels runs its wide entry (twice
    /// [`ConvTiles::channels`] per invocation): in the subgroup module, where the call has more result
    /// channels than the tiles. Each x value a lane loads then serves twice the multiply-adds; a step's
    /// loads cost far more than its multiply-adds on lavapipe (each lane's load is a scalar sequence of its
    /// own), so 64 -> 64 channels ran 11.1 -> 9.5 ms forward, 10.4 -> 9.3 ms input gradient
    /// (`conv3d_*_k1s1`, 3 alternating runs, medians). Four times the channels spilled: 11.8 ms.
    pub fn wide_products(&self, result_channels: usize) -> bool {
        self.subgroup && result_channels > self.channels()
    }

    /// Result channels per invocation of the wide 1x1x1 products, divided by 4: twice the tiles'.
    pub fn wide_quads(&self) -> usize {
        2 * self.quads
    }

    /// The subgroup module's 1x1x1 weight-gradient tile: (output channels / 4, input channels per lane; a
    /// group of 8 lanes owns 8 times as many). Each voxel step of a lane is one gather of x per input
    /// channel and a shuffle of dy per output channel. A gather costs far more than a shuffle (lavapipe runs
    /// it lane by lane, a shuffle is one permute; GPUs pay a transaction per row): 32 output x 2 input
    /// channels ran 12.8 ms where 16 x 4 ran 17.0 ms (`conv3d_bwd_weight_k1s1` on lavapipe, min of 3
    /// alternating runs; 32 x 1, 24 x 2 and 64 x 1 ran 15.5-20 ms, spilling or gathering more).
    /// Calls with at most 8 output channels (SegResNetDS's heads) keep 8 output x 4 input channels.
    pub fn pointwise_weight_tile(&self) -> (usize, usize) {
        if self.quads >= 4 {
            (2 * self.quads, 2)
        } else {
            (self.quads, 4)
        }
    }

    /// Every variant [`ConvTiles::for_call`] can return from these tiles (these included).
    pub fn call_variants(&self) -> Vec<ConvTiles> {
        let mut v = Vec::new();
        for channels in [1, usize::MAX] {
            for columns in [1, usize::MAX] {
                let t = self.for_call(channels, columns);
                if !v.contains(&t) {
                    v.push(t);
                }
            }
        }
        v
    }
}

/// The tiles of the subgroup module (adapters with subgroups of at least [`SUBGROUP_LANES`] invocations).
pub const SUBGROUP_TILES: ConvTiles = ConvTiles {
    subgroup: true,
    cols: 4,
    quads: 4,
    row_cols: 8,
    row_quads: 2,
    row_kernel_rows: 1,
};

/// The tiles of the portable module where workgroup memory allows 16 result channels per workgroup. Its row
/// tiles are small on purpose: Mesa's GL driver compiles 8-wide row kernels ~3x slower (~3 s each, cold).
pub const PORTABLE_TILES: ConvTiles = ConvTiles {
    subgroup: false,
    cols: 4,
    quads: 4,
    row_cols: 4,
    row_quads: 4,
    row_kernel_rows: 1,
};

/// The tiles for an adapter: the subgroup module where subgroups of at least [`SUBGROUP_LANES`] invocations
/// exist (its lanes broadcast the shared operand) and its workgroup memory fits, otherwise the portable module
/// with the most result channels per workgroup whose staged operands fit `workgroup_storage` bytes.
pub fn select_tiles(subgroups: bool, subgroup_min_size: u32, workgroup_storage: u32) -> ConvTiles {
    if subgroups
        && subgroup_min_size as usize >= SUBGROUP_LANES
        && SUBGROUP_TILES.workgroup_bytes() <= workgroup_storage as usize
    {
        return SUBGROUP_TILES;
    }
    let mut t = PORTABLE_TILES;
    while t.quads > 1 && t.workgroup_bytes() > workgroup_storage as usize {
        t.quads /= 2;
        t.row_quads = t.quads;
    }
    t
}

/// Every variant [`select_tiles`] can return for any adapter, with each one's [`ConvTiles::for_call`]
/// variants (what the naga test validates).
pub fn selectable_tiles() -> Vec<ConvTiles> {
    let mut bases = vec![SUBGROUP_TILES];
    for storage in [u32::MAX, 16384, 8192, 4096, 0] {
        let t = select_tiles(false, 0, storage);
        if !bases.contains(&t) {
            bases.push(t);
        }
    }
    let mut v = Vec::new();
    for t in bases.iter().flat_map(ConvTiles::call_variants) {
        if !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

/// The entry points of a convolution module (the portable module has all but the subgroup-only ones, see
/// [`Entry::in_module`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The forward convolution, general kernels.
    Forward,
    /// The forward convolution for stride 1 and 3 taps along W.
    ForwardRow,
    /// The input gradient, general kernels, stride 1.
    BackwardData,
    /// The input gradient for stride 1 and 3 taps along W.
    BackwardDataRow,
    /// The input gradient at strides over 1, one sub-pixel phase class per workgroup.
    BackwardDataPhase,
    /// The weight gradient's per-split partials, general kernels.
    BackwardWeight,
    /// The weight gradient's per-split partials for stride 1 and 3 taps along W.
    BackwardWeightRow,
    /// The weight gradient of 1x1x1 kernels at stride 1 without padding.
    BackwardWeightPointwise,
    /// The forward convolution of 1x1x1 kernels at stride 1 without padding (a channel matrix product).
    ForwardPointwise,
    /// The input gradient of 1x1x1 kernels at stride 1 without padding.
    BackwardDataPointwise,
    /// The forward row kernel at stride 2 along W (3 taps along W).
    ForwardRowStride2,
    /// The weight gradient's per-split partials for stride 2 and 3 taps along W.
    BackwardWeightRowStride2,
    /// The weight gradient of 1x1x1 kernels where each image's voxels are a multiple of 8, read as vec4s
    /// (subgroup module only).
    BackwardWeightPointwiseVec4,
    /// The forward row kernel at stride 2 along W with padding 1 where the input's rows are a multiple of
    /// 4 long, its window read as vec4s (subgroup module only).
    ForwardRowStride2Vec4,
    /// The weight gradient's per-split partials for stride 2 and 3 taps along W with padding 1 where the
    /// input's rows are a multiple of 4 long, the windows read as vec4s (subgroup module only).
    BackwardWeightRowStride2Vec4,
    /// The input gradient at stride 2 along W with 3 taps and padding 1 along W, row kernel over one
    /// phase class along D and H per workgroup (subgroup module only).
    BackwardDataRowStride2,
    /// [`Entry::BackwardDataRowStride2`] where the output gradient's rows are a multiple of 4 long, its
    /// window read as vec4s (subgroup module only).
    BackwardDataRowStride2Vec4,
    /// [`Entry::ForwardPointwise`] with twice the result channels per invocation, for calls with more
    /// result channels than the tiles' (subgroup module only; see [`ConvTiles::wide_products`]).
    ForwardPointwiseWide,
    /// [`Entry::BackwardDataPointwise`] with twice the result channels per invocation, likewise.
    BackwardDataPointwiseWide,
}

impl Entry {
    /// Every entry point, in the order the modules define them (the portable module has all but the
    /// vec4 ones and the stride-2 input-gradient row kernels; see [`Entry::in_module`]).
    pub const ALL: [Entry; 19] = [
        Entry::Forward,
        Entry::BackwardData,
        Entry::BackwardWeight,
        Entry::ForwardRow,
        Entry::BackwardDataRow,
        Entry::BackwardWeightRow,
        Entry::BackwardDataPhase,
        Entry::ForwardPointwise,
        Entry::BackwardDataPointwise,
        Entry::ForwardPointwiseWide,
        Entry::BackwardDataPointwiseWide,
        Entry::BackwardWeightPointwise,
        Entry::ForwardRowStride2,
        Entry::BackwardWeightRowStride2,
        Entry::BackwardWeightPointwiseVec4,
        Entry::ForwardRowStride2Vec4,
        Entry::BackwardWeightRowStride2Vec4,
        Entry::BackwardDataRowStride2,
        Entry::BackwardDataRowStride2Vec4,
    ];

    /// Whether the module of subgroup (`true`) or portable tiles defines this entry point.
    pub fn in_module(self, subgroup: bool) -> bool {
        subgroup
            || !matches!(
                self,
                Entry::BackwardWeightPointwiseVec4
                    | Entry::ForwardRowStride2Vec4
                    | Entry::BackwardWeightRowStride2Vec4
                    | Entry::BackwardDataRowStride2
                    | Entry::BackwardDataRowStride2Vec4
                    | Entry::ForwardPointwiseWide
                    | Entry::BackwardDataPointwiseWide
            )
    }

    /// The entry point's name in the WGSL.
    pub fn name(self) -> &'static str {
        match self {
            Entry::Forward => "forward",
            Entry::ForwardRow => "forward_row",
            Entry::BackwardData => "backward_data",
            Entry::BackwardDataRow => "backward_data_row",
            Entry::BackwardDataPhase => "backward_data_phase",
            Entry::BackwardWeight => "backward_weight",
            Entry::BackwardWeightRow => "backward_weight_row",
            Entry::BackwardWeightPointwise => "backward_weight_pointwise",
            Entry::ForwardPointwise => "forward_pointwise",
            Entry::BackwardDataPointwise => "backward_data_pointwise",
            Entry::ForwardPointwiseWide => "forward_pointwise_wide",
            Entry::BackwardDataPointwiseWide => "backward_data_pointwise_wide",
            Entry::ForwardRowStride2 => "forward_row_s2",
            Entry::BackwardWeightRowStride2 => "backward_weight_row_s2",
            Entry::BackwardWeightPointwiseVec4 => "backward_weight_pointwise_vec4",
            Entry::ForwardRowStride2Vec4 => "forward_row_s2_vec4",
            Entry::BackwardWeightRowStride2Vec4 => "backward_weight_row_s2_vec4",
            Entry::BackwardDataRowStride2 => "backward_data_row_s2",
            Entry::BackwardDataRowStride2Vec4 => "backward_data_row_s2_vec4",
        }
    }
}
