# The commands that produced the bundled `yan-sim-doom` model (run from the repository root, in .venv).
# 1. data: real Doom play in ViZDoom's my_way_home scenario, 64x48, frame skip 2
yan collect --scenario my_way_home --episodes 100 --agent explore --seed 0 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 2 --out outputs/data/mwh_train
yan collect --scenario my_way_home --episodes 60 --agent random --seed 500 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 2 --out outputs/data/mwh_random
yan collect --scenario my_way_home --episodes 12 --agent explore --seed 1000 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 2 --out outputs/data/mwh_heldout
# 2. the causal VAE (8x spatial, 1x temporal, 16 channels)
python training_examples/train_yan_sim_vae.py --dataset_dir outputs/data/mwh_train,outputs/data/mwh_random --output_dir outputs/train/vae --spatial_compression 8 --temporal_compression 1 --latent_channels 16 --block_out_channels 32,64,128 --layers_per_block 1 --norm_num_groups 16 --clip_latent_frames 2 --train_batch_size 8 --max_train_steps 3000 --learning_rate 4e-4 --lr_scheduler cosine --lr_warmup_steps 100 --checkpointing_steps 250 --logging_steps 25 --mixed_precision bf16 --perceptual_weight 0.2 --resume_from_checkpoint latest
# (the run above predates --latent_stats_samples; its latent statistics were set afterwards with the script's own function, same result:)
python -c "import sys; sys.path.insert(0, 'training_examples'); from train_yan_sim_vae import latent_statistics; from diffusers_yan import AutoencoderKLYan; from diffusers_yan.data import GameplayClipDataset; v = AutoencoderKLYan.from_pretrained('outputs/train/vae'); s, k = latent_statistics(v.eval(), GameplayClipDataset('outputs/data/mwh_train', clip_length=1), 512, False, 0); v.register_to_config(shift_factor=s, scaling_factor=k); v.save_pretrained('outputs/train/vae')"
# 3. the simulator: Diffusion Forcing on 10-frame clips, 4.6M-parameter UNet, EMA
OMP_NUM_THREADS=1 python training_examples/train_yan_sim.py --dataset_dir outputs/data/mwh_train,outputs/data/mwh_random --vae_path outputs/train/vae --output_dir outputs/train/sim --clip_latent_frames 10 --block_out_channels 64,128 --layers_per_block 1 --attention_levels 1,1 --attention_head_dim 32 --norm_num_groups 16 --action_embed_dim 128 --temporal_cache_size 16 --train_batch_size 8 --max_train_steps 6000 --learning_rate 3e-4 --lr_warmup_steps 200 --mixed_precision bf16 --use_ema --ema_decay 0.999 --checkpointing_steps 250 --validation_steps 1000 --validation_rollout_frames 24 --logging_steps 25 --resume_from_checkpoint latest
# (from step 2500 on, the same command continued with OMP_NUM_THREADS=2 once the machine's other core was free;
#  v0 of the bundled model was exported at step 4500 with the same command and --max_train_steps 4500.)
# 3b. the run continued from its checkpoints (each line resumes with --resume_from_checkpoint latest; the loader's
#     order and the RNG come back from the checkpoint), with the flags of step 3 plus:
#   steps 4500-4750:  --max_train_steps 20000                                   (constant lr, stopped at 4750)
#   steps 4750-5250:  --max_train_steps 8000 --lr_scheduler linear               (lr decays linearly from here on)
#   steps 5250-5750:  --max_train_steps 9000 --lr_scheduler linear --action_dropout 0.15 --null_action mean
#   steps 5750-6500:  --max_train_steps 10500 --lr_scheduler linear --action_dropout 0.15 --null_action mean
#   steps 6500-11500: --max_train_steps 11500 --lr_scheduler linear --action_dropout 0.15 --null_action mean (2 threads)
#   (--action_dropout 0.15 replaces the actions of 15% of the clips, from a random frame on, with the training data's
#    mean action, which --null_action mean stores in the UNet config: the unconditional branch of action guidance.
#    Changing --max_train_steps of a linear schedule on resume moves the lr to the new line at the current step.)
OMP_NUM_THREADS=2 python training_examples/train_yan_sim.py --dataset_dir outputs/data/mwh_train,outputs/data/mwh_random --vae_path outputs/train/vae --output_dir outputs/train/sim --clip_latent_frames 10 --block_out_channels 64,128 --layers_per_block 1 --attention_levels 1,1 --attention_head_dim 32 --norm_num_groups 16 --action_embed_dim 128 --temporal_cache_size 16 --train_batch_size 8 --max_train_steps 11500 --learning_rate 3e-4 --lr_scheduler linear --lr_warmup_steps 200 --mixed_precision bf16 --use_ema --ema_decay 0.999 --checkpointing_steps 250 --validation_steps 1000 --validation_rollout_frames 24 --logging_steps 25 --action_dropout 0.15 --null_action mean --resume_from_checkpoint latest
# 4. the inverse-dynamics probe for evaluation (real engine frame pairs only)
OMP_NUM_THREADS=1 python training_examples/train_inverse_dynamics.py --dataset_dir outputs/data/mwh_train,outputs/data/mwh_random --validation_dataset_dir outputs/data/mwh_heldout --max_train_steps 3000 --output_dir outputs/train/idm --checkpointing_steps 1000
# 5. the action guidance, chosen on a validation set (neither training data nor the held-out set below):
#    benchmarks/results/yan_sim_doom_guidance_sweep.md (4 runs of this command with other --settings, 2 at a time)
yan collect --scenario my_way_home --episodes 6 --agent explore --seed 2000 --resolution 64x48 --frame-skip 2 --max-steps 400 --workers 1 --out outputs/data/mwh_val
OMP_NUM_THREADS=1 python benchmarks/sweep_guidance.py --model outputs/train/sim --data outputs/data/mwh_val --idm outputs/train/idm --settings 1,2,3:2 --horizons 1,8,32
# 6. evaluation against the engine on the held-out episodes (with the chosen guidance, and without it), speed, and the bundled folder
OMP_NUM_THREADS=1 yan evaluate --model outputs/train/sim --data outputs/data/mwh_heldout --horizons 1,8,32 --idm outputs/train/idm --num-threads 1 --guidance-scale 4 --guidance-steps 2 --json outputs/eval/yan-sim-doom.json
OMP_NUM_THREADS=1 yan evaluate --model outputs/train/sim --data outputs/data/mwh_heldout --horizons 1,8,32 --idm outputs/train/idm --num-threads 1 --guidance-scale 1 --json outputs/eval/yan-sim-doom-unguided.json
python benchmarks/bench_yan_sim.py --model outputs/train/sim --steps 300 --threads 1 --guidance 4:2 --out benchmarks/results/yan_sim_doom_speed.md
python scripts/bundle_model.py --pipeline outputs/train/sim --heldout outputs/data/mwh_heldout --eval_json outputs/eval/yan-sim-doom.json --benchmark benchmarks/results/yan_sim_doom_speed.md --commands scripts/yan_sim_doom_commands.sh --limitations scripts/yan_sim_doom_limitations.md --guidance_scale 4 --guidance_steps 2 --out src/diffusers_yan/assets/models/yan-sim-doom
