# The commands that produced the bundled `yan-sim-doom` model (run from the repository root, in .venv).
# 1. data: real Doom play in ViZDoom's my_way_home scenario, 64x48, frame skip 2
yan collect --scenario my_way_home --episodes 100 --agent explore --seed 0 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 2 --out outputs/data/mwh_train
yan collect --scenario my_way_home --episodes 60 --agent random --seed 500 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 2 --out outputs/data/mwh_random
yan collect --scenario my_way_home --episodes 12 --agent explore --seed 1000 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 2 --out outputs/data/mwh_heldout
# 2. the causal VAE (8x spatial, 1x temporal, 16 channels)
python training_examples/train_yan_sim_vae.py --dataset_dir outputs/data/mwh_train,outputs/data/mwh_random --output_dir outputs/train/vae --spatial_compression 8 --temporal_compression 1 --latent_channels 16 --block_out_channels 32,64,128 --layers_per_block 1 --norm_num_groups 16 --clip_latent_frames 2 --train_batch_size 8 --max_train_steps 3000 --learning_rate 4e-4 --lr_scheduler cosine --lr_warmup_steps 100 --checkpointing_steps 250 --logging_steps 25 --mixed_precision bf16 --perceptual_weight 0.2 --resume_from_checkpoint latest
